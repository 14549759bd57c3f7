"""exportMaterials: every material once, in id order, in batches; one statement per relation
per batch (DataLoaders, no N+1); the batch size capped; over SSE through a real socket, and a
client that goes away ends the export."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from backends.catalog import CatalogReader
from backends.postgres import PostgresBackend, track_queries
from backends.prices import PriceReader
from loaders.registry import RequestLoaders
from resolvers.context import Context
from resolvers.ids import to_global_id
from resolvers.subscriptions import Subscriptions
from schema import build_schema
from tests.schema.test_round_trips import fill
from tests.subscription_helpers import WAIT, Instance, instances, sse_events, wait_hub

EXPORT = """subscription($filter: MaterialFilter, $size: Int) { exportMaterials(filter: $filter, batchSize: $size) {
  sequence done materials { id name category { name } unit { code } currentPrices { unitPrice supplier { name } } } } }"""


def context(pg: PostgresBackend) -> Context:
    catalog, prices = CatalogReader(pg), PriceReader(pg)
    return Context(request=None, response=None, loaders=RequestLoaders.build(catalog, prices), catalog=catalog,
                   prices=prices, subscriptions=Subscriptions(hub=None, pg=pg, max_export_batch=500),  # type: ignore[arg-type]
                   renew_loaders=lambda: (RequestLoaders.build(catalog, prices), None, None))


async def export(pg: PostgresBackend, variables: dict[str, Any]) -> list[Any]:
    stream = await build_schema().subscribe(EXPORT, variable_values=variables, context_value=context(pg))
    return [result async for result in stream]


async def test_export_sends_every_material_once_in_id_order_with_one_statement_per_relation_per_batch(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection
) -> None:
    await fill(conn, materials=250, suppliers=2)
    await export(empty_catalog, {"size": 100})  # new pool connections introspect types: count the steady state
    stats = track_queries()
    results = await export(empty_catalog, {"size": 100})
    assert all(r.errors is None for r in results), results[0].errors
    batches = [r.data["exportMaterials"] for r in results]
    assert [(b["sequence"], len(b["materials"]), b["done"]) for b in batches] == [(1, 100, False), (2, 100, False),
                                                                                  (3, 50, True)]
    ids = [m["id"] for b in batches for m in b["materials"]]
    expected = [r["id"] for r in await conn.fetch("SELECT id FROM materials ORDER BY id")]
    assert ids == [to_global_id("Material", i) for i in expected]
    assert all(len(m["currentPrices"]) == 2 and m["unit"]["code"] == "т" for b in batches for m in b["materials"])
    # Per batch: the materials, then their categories, units and current prices, one statement
    # each for the whole batch (the cache is off here: with it, categories and units are hits).
    assert stats.round_trips == 4 * len(batches)


async def test_export_applies_the_filter_and_refuses_a_batch_size_above_the_cap(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection
) -> None:
    leaf = await fill(conn, materials=40, suppliers=1)
    results = await export(empty_catalog, {"size": 500, "filter": {"categoryId": to_global_id("Category", leaf)}})
    [batch] = [r.data["exportMaterials"] for r in results]
    assert batch["done"] and len(batch["materials"]) == 20  # odd-numbered ones are in the leaf category
    assert {m["category"]["name"] for m in batch["materials"]} == {"Арматура"}

    [refused] = await export(empty_catalog, {"size": 501})
    assert refused.data is None
    assert refused.errors[0].message == "batchSize: must be between 1 and 500 (got 501)"


@pytest.fixture
async def server(database_url: str, empty_catalog: object, tmp_path: Path) -> AsyncIterator[Instance]:
    async with instances(database_url, tmp_path, 1) as started:
        yield started[0]


async def test_export_over_sse_streams_batches_then_complete(server: Instance, conn: asyncpg.Connection) -> None:
    await fill(conn, materials=120, suppliers=1)
    body = {"query": EXPORT, "variables": {"size": 50}}
    async with httpx.AsyncClient(timeout=WAIT) as http, http.stream(
            "POST", server.http, json=body, headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [(e, orjson.loads(d) if d else None) async for e, d in sse_events(response)]
    assert [e for e, _ in events] == ["next", "next", "next", "complete"]
    sizes = [(p["data"]["exportMaterials"]["sequence"], len(p["data"]["exportMaterials"]["materials"]),
              p["data"]["exportMaterials"]["done"]) for e, p in events if e == "next"]
    assert sizes == [(1, 50, False), (2, 50, False), (3, 20, True)]


async def test_a_client_that_goes_away_ends_the_export(server: Instance, conn: asyncpg.Connection) -> None:
    # 300 batches of one material with a 48 KB random description (deflate cannot shrink it):
    # far more than socket buffers hold, so the export can only end early if the server
    # notices the client left and closes the generator (backpressure holds it otherwise).
    await conn.executemany("INSERT INTO materials (name, unit_code, description) VALUES ($1, 'шт', $2)",
                           [(f"Панель {i:03d}", secrets.token_urlsafe(36_000)) for i in range(300)])
    body = {"query": "subscription { exportMaterials(batchSize: 1) { sequence materials { description } } }"}
    async with httpx.AsyncClient(timeout=WAIT) as http:
        async with http.stream("POST", server.http, json=body, headers={"Accept": "text/event-stream"}) as response:
            seen = 0
            async for event, _ in sse_events(response):
                seen += event == "next"
                if seen == 1:
                    await wait_hub(server.http, "running", 1)  # the export is running now
                if seen == 3:
                    break  # leave after 3 of 300 batches: the response is closed here
        async with asyncio.timeout(WAIT):
            while True:  # the server notices, closes the generator, and frees the client's slot
                state = (await http.get(server.http.replace("/graphql", "/health/subscriptions"))).json()
                if state["running"] == 0:
                    break
                await asyncio.sleep(0.05)
