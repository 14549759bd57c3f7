"""Warm-up: the hot entries are back in the cache before any client asks (real PostgreSQL and Redis)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from backends.cache import LOOKUPS
from backends.cache_codec import cache_key
from backends.warmup import WARMED, HotKeys
from resolvers.ids import to_global_id
from tests.catalog_fixtures import JAN, insert_material, insert_price_list, insert_supplier
from tests.conftest import SHARED_REDIS, make_settings

MATERIAL = "query($id: ID!) { material(id: $id) { name currentPrices { unitPrice } } }"
HANG_GUARD = 60  # seconds; only against a hang, never a measured time


@contextlib.asynccontextmanager
async def instance(settings: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    from server import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            yield app, http


async def post(http: httpx.AsyncClient, query: str, variables: dict[str, Any], **headers: str) -> httpx.Response:
    response = await http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
    assert response.status_code == 200 and "errors" not in response.json(), response.text
    return response


async def warmed(app: Any, runs: int) -> None:
    async with asyncio.timeout(HANG_GUARD):
        await app.state.warmer.wait_runs(runs)


async def _catalog(conn: asyncpg.Connection, n: int) -> list[int]:
    supplier = await insert_supplier(conn, "ООО «СтройТорг»")
    ids = [await insert_material(conn, f"Материал {i}", "шт") for i in range(n)]
    await insert_price_list(conn, supplier, 1, JAN, [(mid, f"{100 + i}.00", "RUB") for i, mid in enumerate(ids)])
    return ids


async def _drop_entries(prefix: str) -> int:
    """Empties L2 but for the shared hot counts: as if every entry had expired."""
    redis = aioredis.from_url(SHARED_REDIS)
    try:
        keys = [k async for k in redis.scan_iter(f"{prefix}:*") if b":hot:" not in k and not k.endswith(b":generation")]
        if keys:
            await redis.delete(*keys)
        return len(keys)
    finally:
        await redis.aclose()


def _in_l1(app: Any, kind: str, key: Any) -> bool:
    cache = app.state.cache
    entry = cache.l1.get(cache_key(cache.ns, kind, key), 0.0)
    return entry is not None and cache.freshness.valid(entry.gen, entry.tags)


async def test_after_a_restart_the_hot_materials_are_cached_before_anyone_asks(
    database_url: str, empty_catalog: object, conn: asyncpg.Connection, redis_prefix: str
) -> None:
    hot, warm, cold = await _catalog(conn, 3)
    settings = make_settings(database_url, redis_url=SHARED_REDIS, cache_prefix=redis_prefix, response_cache=False)
    async with instance(settings) as (_, http):
        for _ in range(3):
            await post(http, MATERIAL, {"id": to_global_id("Material", hot)})
        await post(http, MATERIAL, {"id": to_global_id("Material", warm)})
    assert await HotKeys(None, redis_prefix).top("material", 5) == []  # nothing local in a new process
    assert await _drop_entries(redis_prefix) > 0
    misses, prefetched = LOOKUPS.labels("l1", "miss")._value.get(), WARMED.labels("material")._value.get()
    async with instance(settings) as (app, http):
        await warmed(app, 1)
        # The warm-up's own lookups are not requests' misses (nor counted as hot).
        assert LOOKUPS.labels("l1", "miss")._value.get() == misses
        assert WARMED.labels("material")._value.get() == prefetched + 2
        assert await app.state.warmer.hot.top("material", 5) == [str(hot), str(warm)]  # shared, by count
        assert _in_l1(app, "material", hot) and _in_l1(app, "current-prices", hot) and _in_l1(app, "material", warm)
        assert not _in_l1(app, "material", cold)  # never asked for: not prefetched
        first = (await post(http, MATERIAL, {"id": to_global_id("Material", hot)})).json()
        assert first["data"]["material"] == {"name": "Материал 0", "currentPrices": [{"unitPrice": "100.00"}]}
        assert first["extensions"]["queryStats"]["sqlRoundTrips"] == 0
        other = (await post(http, MATERIAL, {"id": to_global_id("Material", cold)})).json()
        assert other["extensions"]["queryStats"]["sqlRoundTrips"] >= 1
    redis = aioredis.from_url(SHARED_REDIS)
    try:  # the warm-up filled L2 again too
        assert await redis.exists(cache_key(app.state.cache.ns, "material", hot)) == 1
    finally:
        await redis.aclose()


async def test_after_a_restart_hot_anonymous_responses_are_stored_before_anyone_asks(
    database_url: str, empty_catalog: object, conn: asyncpg.Connection, redis_prefix: str
) -> None:
    public, private = await _catalog(conn, 2)
    settings = make_settings(database_url, redis_url=SHARED_REDIS, cache_prefix=redis_prefix)
    async with instance(settings) as (_, http):
        for _ in range(2):
            await post(http, MATERIAL, {"id": to_global_id("Material", public)})
            await post(http, MATERIAL, {"id": to_global_id("Material", private)}, authorization="Bearer k1")
    await _drop_entries(redis_prefix)
    async with instance(settings) as (app, http):
        await warmed(app, 1)
        assert app.state.warmer.warmed["response"] == 1  # a caller's credentials are never replayed
        first = await post(http, MATERIAL, {"id": to_global_id("Material", public)})
        assert first.headers["x-cache"] == "hit"
        assert first.json() == {"data": {"material": {"name": "Материал 0", "currentPrices": [{"unitPrice": "100.00"}]}}}
        keyed = await post(http, MATERIAL, {"id": to_global_id("Material", private)}, authorization="Bearer k1")
        assert keyed.headers["x-cache"] == "miss"


async def test_after_an_invalidation_burst_the_hot_entries_are_read_again_fresh(
    database_url: str, empty_catalog: object, conn: asyncpg.Connection
) -> None:
    hot, _ = await _catalog(conn, 2)
    settings = make_settings(database_url, cache_warmup_cooldown_s=0)  # L1 only: the counts of this process
    async with instance(settings) as (app, http):
        await warmed(app, 1)
        for _ in range(2):
            await post(http, MATERIAL, {"id": to_global_id("Material", hot)})
        assert _in_l1(app, "material", hot)
        async with conn.transaction():  # a burst: a rename and 60 events, committed at once
            await conn.execute("UPDATE materials SET name = 'Материал 0 (новый)' WHERE id = $1", hot)
            await conn.execute("INSERT INTO events (topic, entity_id, payload) "
                               "SELECT 'material.updated', $1, '{}'::jsonb FROM generate_series(1, 60)", hot)
        await warmed(app, 2)  # the listener applies the burst; the warm-up follows it
        assert _in_l1(app, "material", hot)  # read again after the burst, at the new generation
        first = await post(http, MATERIAL, {"id": to_global_id("Material", hot)})
        # The response was executed again by the warm-up, after the burst: stored, and new.
        assert first.headers["x-cache"] == "hit"
        assert first.json()["data"]["material"]["name"] == "Материал 0 (новый)"


async def test_warm_up_off_counts_nothing_and_prefetches_nothing(
    database_url: str, empty_catalog: object, conn: asyncpg.Connection, redis_prefix: str
) -> None:
    hot, _ = await _catalog(conn, 2)
    settings = make_settings(database_url, redis_url=SHARED_REDIS, cache_prefix=redis_prefix, cache_warmup=False)
    async with instance(settings) as (app, http):
        assert app.state.warmer is None and app.state.cache.hot is None
        await post(http, MATERIAL, {"id": to_global_id("Material", hot)})
    redis = aioredis.from_url(SHARED_REDIS)
    try:
        assert [k async for k in redis.scan_iter(f"{redis_prefix}:hot:*")] == []
    finally:
        await redis.aclose()


def test_local_counts_stay_bounded_and_keep_the_most_requested() -> None:
    hot = HotKeys(None, "p", max_keys=10)
    for _ in range(5):
        hot.count("material", ["1", "2"])
    hot.count("material", [str(i) for i in range(100, 200)])
    assert len(hot.counts["material"]) < 20
    assert asyncio.run(hot.top("material", 2)) == ["1", "2"]


async def test_shared_counts_add_up_across_instances_trimmed_and_decayed(redis_prefix: str) -> None:
    from backends.redis_link import RedisLink

    links = [await RedisLink(SHARED_REDIS).open() for _ in range(2)]
    try:
        one, two = (HotKeys(link, redis_prefix, shared_keys=2, decay_s=600) for link in links)
        one.count("material", ["1"] * 4 + ["2"] * 2 + ["3"])
        await one.flush()  # 1: 4, 2: 2 ("3" is trimmed); the first flush of the period halves them
        two.count("material", ["2"] * 3 + ["3"])
        await two.flush()
        redis = aioredis.from_url(SHARED_REDIS)
        try:
            scores = dict(await redis.zrange(f"{redis_prefix}:hot:material", 0, -1, withscores=True))
        finally:
            await redis.aclose()
        assert scores == {b"1": 2.0, b"2": 4.0}  # 1 + 3 for "2"; "3" (1) fell out of the top 2 again
        assert await HotKeys(links[0], redis_prefix).top("material", 5) == ["2", "1"]
        await one.flush()  # nothing new: nothing written
    finally:
        for link in links:
            await link.close()


async def test_within_the_cooldown_a_burst_waits(database_url: str, empty_catalog: object,
                                                 conn: asyncpg.Connection) -> None:
    hot, _ = await _catalog(conn, 2)
    async with instance(make_settings(database_url, cache_warmup_cooldown_s=3600)) as (app, http):
        await warmed(app, 1)
        await post(http, MATERIAL, {"id": to_global_id("Material", hot)})
        await conn.execute("INSERT INTO events (topic, entity_id, payload) "
                           "SELECT 'material.updated', $1, '{}'::jsonb FROM generate_series(1, 60)", hot)
        await app.state.cache.freshness.committed()  # the burst applied here (the listener may be later)
        assert app.state.cache.freshness.events_applied >= 60
        async with asyncio.timeout(HANG_GUARD):
            await app.state.warmer.wait_ticks(app.state.warmer.ticks + 3)  # a burst tick, then quiet ones
        assert app.state.warmer.runs == 1 and not _in_l1(app, "material", hot)



async def test_start_up_and_requests_do_not_wait_for_the_warm_up(
    database_url: str, empty_catalog: object, conn: asyncpg.Connection, redis_prefix: str
) -> None:
    hot, _ = await _catalog(conn, 2)
    settings = make_settings(database_url, redis_url=SHARED_REDIS, cache_prefix=redis_prefix, response_cache=False)
    async with instance(settings) as (_, http):
        await post(http, MATERIAL, {"id": to_global_id("Material", hot)})
    await _drop_entries(redis_prefix)
    lock = conn.transaction()
    await lock.start()
    held = True
    try:
        await conn.execute("LOCK TABLE materials IN ACCESS EXCLUSIVE MODE")  # the warm-up's read waits ...
        async with instance(settings) as (app, http):  # ... start-up does not
            units = await http.post("/graphql", json={"query": "{ units { code } }"})
            assert units.status_code == 200 and units.json()["data"]["units"]
            assert app.state.warmer.runs == 0  # still behind the lock
            await lock.rollback()
            held = False
            await warmed(app, 1)
            assert _in_l1(app, "material", hot)
    finally:
        if held:
            await lock.rollback()


RENAME = "mutation($id: ID!, $name: String!) { updateMaterial(id: $id, patch: {name: $name}) { errors { message } } }"


async def _rename(http: httpx.AsyncClient, mid: int, name: str) -> None:
    response = await http.post("/graphql", json={"query": RENAME, "variables": {"id": to_global_id("Material", mid),
                                                                                "name": name}})
    assert response.status_code == 200 and response.json()["data"]["updateMaterial"]["errors"] == [], response.text


async def refreshed(app: Any) -> None:
    async with asyncio.timeout(HANG_GUARD):
        await app.state.refresher.wait_idle()


async def test_a_hot_response_dropped_by_a_write_is_stored_again_new_before_the_next_read(
    database_url: str, empty_catalog: object, conn: asyncpg.Connection
) -> None:
    hot, once = await _catalog(conn, 2)
    settings = make_settings(database_url)  # L1 only
    async with instance(settings) as (app, http):
        for _ in range(2):
            await post(http, MATERIAL, {"id": to_global_id("Material", hot)})
        await post(http, MATERIAL, {"id": to_global_id("Material", once)})
        await _rename(http, hot, "Материал 0 (новый)")
        await _rename(http, once, "Материал 1 (новый)")
        await refreshed(app)
        assert app.state.refresher.refreshed == 1  # the response asked for once is left to its next reader
        first = await post(http, MATERIAL, {"id": to_global_id("Material", hot)})
        assert first.headers["x-cache"] == "hit"
        assert first.json()["data"]["material"]["name"] == "Материал 0 (новый)"
        other = await post(http, MATERIAL, {"id": to_global_id("Material", once)})
        assert other.headers["x-cache"] == "miss"
        assert other.json()["data"]["material"]["name"] == "Материал 1 (новый)"


async def test_another_instance_finds_the_refreshed_response_in_redis(
    database_url: str, empty_catalog: object, conn: asyncpg.Connection, redis_prefix: str
) -> None:
    hot, _ = await _catalog(conn, 2)
    settings = make_settings(database_url, redis_url=SHARED_REDIS, cache_prefix=redis_prefix)
    gid = to_global_id("Material", hot)
    async with instance(settings) as (writer_app, writer), instance(settings) as (reader_app, reader):
        for http in (writer, reader, writer, reader):
            await post(http, MATERIAL, {"id": gid})
        executions = LOOKUPS.labels("response", "miss")._value.get()
        await _rename(writer, hot, "Материал 0 (новый)")
        await refreshed(writer_app)
        # The reader learns of the write from the outbox (LISTEN), then reads the writer's new entry.
        async with asyncio.timeout(HANG_GUARD):
            await reader_app.state.refresher.wait_refreshed(1)
        assert writer_app.state.refresher.refreshed == 1
        for http in (reader, writer):
            response = await post(http, MATERIAL, {"id": gid})
            assert response.headers["x-cache"] == "hit"
            assert response.json()["data"]["material"]["name"] == "Материал 0 (новый)"
        assert LOOKUPS.labels("response", "miss")._value.get() == executions  # refreshes are not counted as misses


async def test_refresh_off_leaves_the_dropped_response_to_its_next_reader(
    database_url: str, empty_catalog: object, conn: asyncpg.Connection
) -> None:
    hot, _ = await _catalog(conn, 2)
    async with instance(make_settings(database_url, cache_refresh=False)) as (app, http):
        assert app.state.refresher is None
        for _ in range(2):
            await post(http, MATERIAL, {"id": to_global_id("Material", hot)})
        await _rename(http, hot, "Материал 0 (новый)")
        response = await post(http, MATERIAL, {"id": to_global_id("Material", hot)})
        assert response.headers["x-cache"] == "miss"
        assert response.json()["data"]["material"]["name"] == "Материал 0 (новый)"


def test_the_tag_index_keeps_entities_only_and_forgets_members_that_fall_out_of_the_counts() -> None:
    hot = HotKeys(None, "unit", max_keys=2)
    hot.count("response", ["a", "a", "b", "b", "b"])
    hot.index_response("a", ["material:1", "list:materials", "supplier:3"])
    hot.index_response("b", ["material:2", "list:prices"])
    assert hot.hot_responses({"list:materials"}, 1) == []  # every write of a kind touches list tags
    assert hot.hot_responses({"material:1", "material:2"}, 1) == ["b", "a"]  # most requested first
    assert hot.hot_responses({"supplier:3"}, 3) == []  # "a" was asked for twice
    assert sorted(hot.hot_responses({"*"}, 1)) == ["a", "b"]
    hot.count("response", ["c", "c", "c", "c", "d", "d", "d", "d"])  # a and b drop out of the top 2
    assert hot.hot_responses({"material:1", "material:2", "supplier:3"}, 1) == []
    assert not hot.indexed("a") and not hot.indexed("b")


async def test_on_start_the_most_searched_queries_are_embedded_before_anyone_searches(
    database_url: str, empty_catalog: object, conn: asyncpg.Connection
) -> None:
    from backends.embedder import stable_key

    await conn.execute("INSERT INTO search_queries (query, hits) VALUES ('цемент м500', 40), ('кирпич', 30), "
                       "('саморез', 1)")
    async with instance(make_settings(database_url, cache_warmup_searches=2)) as (app, _):
        await warmed(app, 1)
        assert app.state.warmer.warmed["search"] == 2
        embedder = app.state.search.embedder
        assert embedder.calls == 2
        cached = embedder.cache
        assert cached.get(stable_key(embedder.model_id, "цемент м500")) is not None
        assert cached.get(stable_key(embedder.model_id, "саморез")) is None  # below the top 2
