"""asyncpg pools: grow on demand, shed idle connections, advise when saturated; reads on DATABASE_READ_URL."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import pytest

from backends import metrics
from backends.gauges import PoolWatch
from backends.postgres import PostgresBackend
from resolvers.ids import to_global_id
from tests.catalog_fixtures import insert_material
from tests.conftest import app_client, make_settings

READ = "query($id: ID!) { material(id: $id) { name } }"


async def until(check, what: str, limit_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_a_pool_grows_on_demand_up_to_its_maximum_and_sheds_idle_connections(database_url: str) -> None:
    async with PostgresBackend(database_url, min_size=0, max_size=4, max_inactive_connection_lifetime=0.3) as pg:
        assert pg.pool_usage()["size"] == 0  # nothing opened before it is needed
        await asyncio.gather(*(pg.fetchval("SELECT pg_sleep(0.2)") for _ in range(8)))
        usage = pg.pool_usage()
        assert usage["size"] == 4 and usage["max"] == 4  # grew to the maximum, not past it
        await until(lambda: pg.pool_usage()["size"] == 0, "idle connections closed")


async def test_a_saturated_pool_is_counted_and_logs_what_to_do(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with PostgresBackend(database_url, min_size=1, max_size=1) as pg:
        watch = PoolWatch("primary", pg)
        queries = [asyncio.create_task(pg.fetchval("SELECT pg_sleep(0.3)")) for _ in range(3)]
        await until(lambda: pg.pool_usage()["waiting"] >= 1, "callers waiting for the one connection")
        counted = metrics.PG_POOL_SATURATED.labels("primary")._value.get()
        with caplog.at_level(logging.WARNING, logger="backends.gauges"):
            usage = watch.sample()
            watch.sample()  # a second look within a minute does not repeat the advice
            watch.sample(count=False)  # a scrape sets the gauges, counts nothing
        await asyncio.gather(*queries)
    assert usage["in_use"] == 1 and usage["waiting"] >= 1
    assert metrics.PG_POOL_SATURATED.labels("primary")._value.get() == counted + 2
    advice = [r.getMessage() for r in caplog.records if "saturated" in r.getMessage()]
    assert len(advice) == 1 and "PG_POOL_MAX" in advice[0] and "DATABASE_READ_URL" in advice[0]


async def test_reads_go_to_the_read_url_and_writes_to_the_primary(
    database_url: str, empty_catalog: object, conn: asyncpg.Connection
) -> None:
    mid = await insert_material(conn, "Доска обрезная", "шт")
    # The "replica": the same server, reached with another application_name, every transaction
    # read-only (a write sent there would fail).
    replica = database_url + "?application_name=materials-replica&options=-c%20default_transaction_read_only%3Don"
    settings = make_settings(database_url, database_read_url=replica, pg_read_pool_min=0, response_cache=False,
                             cache=False)
    async with app_client(settings) as http:

        async def replica_connections() -> int:
            return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                       "'materials-replica' AND datname = current_database()")

        assert await replica_connections() == 0  # the read pool opens connections lazily
        body = (await http.post("/graphql", json={"query": READ, "variables": {
            "id": to_global_id("Material", mid)}})).json()
        assert body["data"]["material"]["name"] == "Доска обрезная"
        assert await replica_connections() >= 1
        renamed = (await http.post("/graphql", json={"query": """mutation($id: ID!) {
            updateMaterial(id: $id, patch: {name: "Доска строганая"}) { errors { code } } }""",
                                                     "variables": {"id": to_global_id("Material", mid)}})).json()
        assert renamed["data"]["updateMaterial"]["errors"] == [], renamed  # the primary took the write
        text = (await http.get("/metrics")).text
        assert 'materials_pg_pool_connections{pool="replica",state="max"} 10.0' in text


async def test_a_server_that_never_answers_is_unavailable_after_the_connect_timeout() -> None:
    from backends.errors import BackendUnavailable

    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accepts the connection, never says a word (a hung server)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with PostgresBackend(f"postgresql://postgres@127.0.0.1:{port}/x", min_size=0, max_size=2,
                                   connect_timeout=0.3) as pg:
            with pytest.raises(BackendUnavailable, match="PostgreSQL unavailable"):
                await pg.fetchval("SELECT 1")
        assert accepted  # it did reach the server, and gave up on it
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
