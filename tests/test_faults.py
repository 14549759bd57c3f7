"""Backends stopped and started again under load (real processes): what still works, what fails
fast, and that each recovers without restarting the server.

- Redis killed (SIGKILL) and restarted: zero failed requests; its circuit opens, then closes.
- PostgreSQL (an embedded server of the test's own) stopped: cached reads are still served,
  writes and uncached reads fail at once with code UNAVAILABLE, the instance is not ready;
  started again: writes work again in the same server process.
- The vector store made unavailable: searches answer from the text side with degraded: true,
  its circuit opens (later searches do not wait for it), then it comes back on its own.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from backends.metrics import sum_values
from resolvers.ids import to_global_id
from tests.catalog_fixtures import JAN, insert_material, insert_price_list, insert_supplier
from tests.conftest import app_client, make_settings
from tests.postgres_server import OwnPostgres
from tests.redis_server import OwnRedis
from tests.request_load import under_load

READ = "query Read($id: ID!) { material(id: $id) { name currentPrices { unitPrice } } }"
PAGE = "query Page { materials(first: 5) { edges { node { name } } } }"
RENAME = "mutation Rename($id: ID!, $n: String!) { updateMaterial(id: $id, patch: {name: $n}) { errors { code } } }"
CREATE = 'mutation Create($n: String!) { createMaterial(input: {name: $n, unit: "шт"}) { material { id } errors { code } } }'
SEARCH = "query Find($q: String!) { search(query: $q, first: 5) { degraded edges { node { material { name } } } } }"


async def eventually(check: Callable[[], Awaitable[bool]], what: str, limit_s: float = 60.0) -> None:
    """Polls `check` until it holds (bounded: fails the test after `limit_s`, never measures time)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


async def metrics_text(http: httpx.AsyncClient) -> str:
    return (await http.get("/metrics")).text


async def test_redis_killed_and_restarted_under_load_fails_no_request(
    database_url: str, empty_catalog: object, conn: asyncpg.Connection
) -> None:
    mid = await insert_material(conn, "Цемент v0", "мешок")
    supplier = await insert_supplier(conn, "ООО «Отказ»")
    await insert_price_list(conn, supplier, 1, JAN, [(mid, "380.00", "RUB")])
    variables = {"id": to_global_id("Material", mid)}
    redis = OwnRedis()
    redis.start()
    settings = make_settings(database_url, redis_url=redis.url, cache_prefix=f"fault-{secrets.token_hex(3)}",
                             breaker_threshold=2, breaker_reset_s=0.3)
    try:
        async with app_client(settings) as http:
            opened_before = sum_values(await metrics_text(http), "materials_circuit_opened_total", {"backend": "redis"})
            async with under_load(http, [(READ, variables), (PAGE, {})], workers=4) as load:
                await asyncio.sleep(0.3)
                assert redis.proc is not None
                redis.proc.kill()  # SIGKILL: no goodbye to the clients
                redis.proc.wait()
                redis.proc = None
                renamed = await http.post("/graphql", json={"query": RENAME,
                                                            "variables": {**variables, "n": "Цемент v1"}})
                assert renamed.json()["data"]["updateMaterial"]["errors"] == []  # writes go on without Redis
                target = load.served + 50

                async def served_while_down() -> bool:
                    return load.served >= target

                await eventually(served_while_down, "requests while down")
                text = await metrics_text(http)
                assert sum_values(text, "materials_circuit_opened_total", {"backend": "redis"}) > opened_before
                ready = (await http.get("/health/ready")).json()
                assert ready["status"] == "degraded" and ready["redis"]["status"] == "down"

                redis.start()

                async def closed_again() -> bool:
                    text = await metrics_text(http)
                    return 'materials_circuit_state{backend="redis"} 0.0' in text and (
                        await http.get("/health/ready")).json()["status"] == "ready"

                await eventually(closed_again, "the Redis circuit closed again")
                read = (await http.post("/graphql", json={"query": READ, "variables": variables})).json()
                assert read["data"]["material"]["name"] == "Цемент v1"
    finally:
        redis.stop()
    assert load.failures == [], load.failures[:3]
    assert load.served > 100


async def test_postgres_stopped_serves_cached_reads_fails_writes_fast_and_recovers(tmp_path: Path) -> None:
    pg = OwnPostgres(tmp_path / "pg")
    redis = OwnRedis()
    await asyncio.to_thread(pg.start)
    redis.start()
    try:
        settings = make_settings(pg.url, redis_url=redis.url, cache_prefix="pgfault", search_indexer=False,
                                 cache_warmup=False)
        async with app_client(settings) as http:
            created = (await http.post("/graphql", json={"query": CREATE, "variables": {"n": "Кирпич М150"}})).json()
            material = created["data"]["createMaterial"]["material"]["id"]
            variables = {"id": material}
            for _ in range(2):  # stored in the response cache
                body = (await http.post("/graphql", json={"query": READ, "variables": variables})).json()
                assert body["data"]["material"]["name"] == "Кирпич М150"

            await asyncio.to_thread(pg.stop)

            outcomes: dict[str, list[Any]] = {"cached": [], "write": [], "uncached": []}

            async def reader() -> None:
                for _ in range(30):
                    response = await http.post("/graphql", json={"query": READ, "variables": variables})
                    outcomes["cached"].append((response.status_code, response.headers.get("x-cache"),
                                               response.json()))

            async def writer() -> None:
                for i in range(5):
                    response = await http.post("/graphql", json={"query": RENAME, "variables": {**variables,
                                                                                                 "n": f"v{i}"}})
                    outcomes["write"].append(response.json())
                    other = await http.post("/graphql", json={"query": PAGE})
                    outcomes["uncached"].append(other.json())

            await asyncio.gather(reader(), reader(), writer())
            # Every cached read was served, from the stored response.
            assert len(outcomes["cached"]) == 60
            for status, cache, body in outcomes["cached"]:
                assert status == 200 and cache == "hit" and body["data"]["material"]["name"] == "Кирпич М150", body
            # Every write failed with UNAVAILABLE (and so did reads the cache could not answer).
            for body in outcomes["write"] + outcomes["uncached"]:
                assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAVAILABLE"], body
            ready = await http.get("/health/ready")
            assert ready.status_code == 503 and ready.json()["postgres"]["status"] == "down"
            text = await metrics_text(http)
            assert sum_values(text, "materials_requests_total", {"operation": "Rename", "outcome": "unavailable"}) >= 5

            await asyncio.to_thread(pg.start)  # the same server process goes on

            async def write_works() -> bool:
                body = (await http.post("/graphql", json={"query": RENAME, "variables": {**variables,
                                                                                          "n": "Кирпич М200"}})).json()
                return "errors" not in body and body["data"]["updateMaterial"]["errors"] == []

            await eventually(write_works, "a write after PostgreSQL came back")
            read = (await http.post("/graphql", json={"query": READ, "variables": variables})).json()
            assert read["data"]["material"]["name"] == "Кирпич М200"  # the write invalidated the cached read
            assert (await http.get("/health/ready")).status_code == 200
    finally:
        redis.stop()
        await asyncio.to_thread(pg.close)


async def test_vector_store_unavailable_degrades_search_and_recovers(
    database_url: str, empty_catalog: object
) -> None:
    from server import create_app
    from tests.schema.test_search import index_now

    settings = make_settings(database_url, search_indexer=False, breaker_threshold=2, breaker_reset_s=0.3)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            for name in ("Цемент М500", "Песок карьерный", "Щебень гранитный"):
                created = await http.post("/graphql", json={"query": CREATE, "variables": {"n": name}})
                assert created.json()["data"]["createMaterial"]["errors"] == []
            await index_now(app)
            healthy = (await http.post("/graphql", json={"query": SEARCH, "variables": {"q": "цемент"}})).json()
            assert healthy["data"]["search"]["degraded"] is False

            index = app.state.search.index
            await index.inner.close()  # the vector store goes away
            results = await asyncio.gather(*(
                http.post("/graphql", json={"query": SEARCH, "variables": {"q": "цемент"}}) for _ in range(20)))
            for response in results:
                body = response.json()
                assert response.status_code == 200 and "errors" not in body, body
                assert body["data"]["search"]["degraded"] is True
                assert body["data"]["search"]["edges"][0]["node"]["material"]["name"] == "Цемент М500"
            assert index.breaker.opened >= 1  # later searches skipped the store instead of trying it
            assert (await http.get("/health/ready")).json()["status"] == "degraded"

            await index.inner.open(app.state.search.embedder.model_id, app.state.search.embedder.dim)
            await index_now(app)

            async def recovered() -> bool:
                body = (await http.post("/graphql", json={"query": SEARCH, "variables": {"q": "цемент"}})).json()
                return body["data"]["search"]["degraded"] is False

            await eventually(recovered, "search no longer degraded")
            assert index.breaker.state == "closed"
