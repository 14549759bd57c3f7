"""Whole responses served from the cache: stored bytes, keyed and tagged, dropped by writes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from backends.cache import LOOKUPS
from backends.cache_codec import decode_entry
from resolvers.ids import to_global_id
from tests.catalog_fixtures import JAN, insert_category, insert_material, insert_price_list, insert_supplier
from tests.conftest import SHARED_REDIS, app_client, make_settings

MATERIAL = """query($id: ID!) { material(id: $id) { name category { name } currentPrices { unitPrice } } }"""
PAGE = "{ materials(first: 10) { totalCount edges { node { name } } } }"


@pytest.fixture(params=[True, False], ids=["redis", "l1-only"])
async def client(request: pytest.FixtureRequest, database_url: str, empty_catalog: object,
                 redis_prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    redis_url = SHARED_REDIS if request.param else None
    async with app_client(make_settings(database_url, redis_url=redis_url, cache_prefix=redis_prefix)) as http:
        yield http


async def post(client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> httpx.Response:
    response = await client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
    assert response.status_code == 200, response.text
    return response


async def _catalog(conn: asyncpg.Connection) -> int:
    cat = await insert_category(conn, "Цемент")
    mid = await insert_material(conn, "Цемент М500", "мешок", category_id=cat)
    supplier = await insert_supplier(conn, "ООО «СтройТорг»")
    await insert_price_list(conn, supplier, 1, JAN, [(mid, "380.00", "RUB")])
    return mid


async def test_a_repeated_query_is_served_from_stored_bytes_without_executing(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    mid = await _catalog(conn)
    variables = {"id": to_global_id("Material", mid)}
    first = await post(client, MATERIAL, variables)
    assert first.headers["x-cache"] == "miss" and "queryStats" in first.json()["extensions"]
    # Written behind the outbox's back: only a response that is not executed keeps the old name.
    await conn.execute("UPDATE materials SET name = 'изменено без события' WHERE id = $1", mid)
    respaced = "# the same document\n" + MATERIAL.replace(" ", "  ")
    second = await post(client, respaced, variables)
    assert second.headers["x-cache"] == "hit"
    assert second.json() == {"data": first.json()["data"]}  # the stored bytes: no queryStats of their own
    assert second.json()["data"]["material"]["name"] == "Цемент М500"


async def test_variables_and_callers_get_entries_of_their_own(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    mid = await _catalog(conn)
    other = await insert_material(conn, "Песок речной", "м³")
    assert (await post(client, MATERIAL, {"id": to_global_id("Material", mid)})).headers["x-cache"] == "miss"
    sand = await post(client, MATERIAL, {"id": to_global_id("Material", other)})
    assert sand.headers["x-cache"] == "miss" and sand.json()["data"]["material"]["name"] == "Песок речной"
    keyed = await post(client, MATERIAL, {"id": to_global_id("Material", mid)}, headers={"Authorization": "Bearer k1"})
    assert keyed.headers["x-cache"] == "miss"
    again = await post(client, MATERIAL, {"id": to_global_id("Material", mid)}, headers={"Authorization": "Bearer k1"})
    assert again.headers["x-cache"] == "hit"


async def test_writes_drop_the_responses_that_contain_what_they_changed(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    mid = await _catalog(conn)
    variables = {"id": to_global_id("Material", mid)}
    await post(client, MATERIAL, variables)
    await post(client, PAGE)
    assert (await post(client, PAGE)).headers["x-cache"] == "hit"
    update = "mutation($id: ID!) { updateMaterial(id: $id, patch: {name: \"Цемент М500 Д0\"}) { errors { code } } }"
    await post(client, update, variables)
    changed = await post(client, MATERIAL, variables)
    assert changed.headers["x-cache"] == "miss" and changed.json()["data"]["material"]["name"] == "Цемент М500 Д0"
    create = 'mutation { createMaterial(input: {name: "Арматура А500С", unit: "т"}) { errors { code } } }'
    await post(client, create)
    page = await post(client, PAGE)
    assert page.headers["x-cache"] == "miss"
    assert page.json()["data"]["materials"]["totalCount"] == 2


async def test_errors_and_search_are_not_stored(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    await _catalog(conn)
    bad = '{ material(id: "not-an-id") { name } }'
    assert (await post(client, bad)).json()["errors"]
    assert (await post(client, bad)).headers["x-cache"] == "miss"
    found = "{ search(query: \"цемент\", mode: TEXT) { edges { node { name } } } }"
    assert "x-cache" not in (await post(client, found)).headers  # not a catalog root field
    mid = await conn.fetchval("SELECT id FROM materials LIMIT 1")
    similar = "query($id: ID!) { material(id: $id) { similar(first: 2) { material { name } } } }"
    await post(client, similar, {"id": to_global_id("Material", mid)})
    assert (await post(client, similar, {"id": to_global_id("Material", mid)})).headers["x-cache"] == "miss"


async def test_stored_responses_in_redis_are_tagged_msgpack_frames(
    database_url: str, empty_catalog: object, conn: asyncpg.Connection, redis_prefix: str
) -> None:
    mid = await _catalog(conn)
    async with app_client(make_settings(database_url, redis_url=SHARED_REDIS, cache_prefix=redis_prefix)) as http:
        await post(http, MATERIAL, {"id": to_global_id("Material", mid)})
    redis = aioredis.from_url(SHARED_REDIS)
    keys = [k async for k in redis.scan_iter(f"{redis_prefix}:*:response:*")]
    frames = [await redis.get(k) for k in keys]
    await redis.aclose()
    assert len(frames) == 1
    _, tags, value = decode_entry(frames[0])
    assert {f"material:{mid}", "list:materials"} & set(tags) == {f"material:{mid}"}
    assert any(t.startswith("category:") for t in tags) and any(t.startswith("supplier:") for t in tags)
    assert "Цемент".encode() in value["body"]  # orjson bytes, stored as they are served


async def get(client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
    params = {"query": query, **({"variables": json.dumps(variables)} if variables is not None else {})}
    response = await client.get("/graphql", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response


async def test_get_queries_are_served_from_the_same_entries_as_posts(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    mid = await _catalog(conn)
    variables = {"id": to_global_id("Material", mid)}
    first = await get(client, MATERIAL, variables)
    assert first.headers["x-cache"] == "miss" and first.json()["data"]["material"]["name"] == "Цемент М500"
    assert (await get(client, MATERIAL, variables)).headers["x-cache"] == "hit"
    assert (await post(client, MATERIAL, variables)).headers["x-cache"] == "hit"  # one document, one entry
    assert (await get(client, PAGE)).headers["x-cache"] == "miss"
    posted = await post(client, PAGE)
    assert posted.headers["x-cache"] == "hit"
    keyed = await get(client, MATERIAL, variables, headers={"Authorization": "Bearer k1"})
    assert keyed.headers["x-cache"] == "miss"
    update = "mutation($id: ID!) { updateMaterial(id: $id, patch: {name: \"Цемент М500 Д0\"}) { errors { code } } }"
    await post(client, update, variables)
    changed = await get(client, MATERIAL, variables)
    # A hit when the background refresh (backends.warmup.Refresher) stored it first; new either way.
    assert changed.json()["data"]["material"]["name"] == "Цемент М500 Д0"
    assert (await get(client, MATERIAL, variables)).headers["x-cache"] == "hit"


async def test_response_hits_and_misses_are_counted(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    mid = await _catalog(conn)
    hits, misses = (LOOKUPS.labels("response", r)._value.get() for r in ("hit", "miss"))
    for _ in range(3):
        await post(client, MATERIAL, {"id": to_global_id("Material", mid)})
    assert LOOKUPS.labels("response", "miss")._value.get() == misses + 1
    assert LOOKUPS.labels("response", "hit")._value.get() == hits + 2
