"""The cache seen through GraphQL: hot reads skip PostgreSQL, every write path drops what it changed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from resolvers.ids import to_global_id
from tests.catalog_fixtures import JAN, insert_category, insert_material, insert_price_list, insert_supplier
from tests.conftest import SHARED_REDIS, app_client, gql, gql_data, make_settings

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "supplier-samples"
REPO = Path(__file__).resolve().parents[2]
MATERIAL = """query($id: ID!) { material(id: $id) { name sku category { name } unit { code }
  currentPrices { unitPrice supplier { name } priceList { version status } } } }"""


@pytest.fixture
async def rows_cached(database_url: str, empty_catalog: object, redis_prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app with both cache levels under the loaders (Redis under a prefix of this test's own)."""
    settings = make_settings(database_url, redis_url=SHARED_REDIS, cache_prefix=redis_prefix, response_cache=False)
    async with app_client(settings) as http:
        yield http


@pytest.fixture(params=["rows", "rows+responses"])
async def cached(request: pytest.FixtureRequest, database_url: str, empty_catalog: object,
                 redis_prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    """The loaders' cache alone, then with the response cache too."""
    settings = make_settings(database_url, redis_url=SHARED_REDIS, cache_prefix=redis_prefix,
                             response_cache=request.param == "rows+responses")
    async with app_client(settings) as http:
        yield http


async def _material(conn: asyncpg.Connection) -> tuple[int, int, int]:
    cat = await insert_category(conn, "Цемент")
    mid = await insert_material(conn, "Цемент М500", "мешок", sku="CEM-1", category_id=cat)
    supplier = await insert_supplier(conn, "ООО «СтройТорг»")
    await insert_price_list(conn, supplier, 1, JAN, [(mid, "380.00", "RUB")])
    return mid, supplier, cat


async def test_a_hot_material_read_costs_no_sql_round_trip(
    rows_cached: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    mid, _, _ = await _material(conn)
    variables = {"id": to_global_id("Material", mid)}
    cold = await gql(rows_cached, MATERIAL, variables)
    hot = await gql(rows_cached, MATERIAL, variables)
    assert hot["data"] == cold["data"] and cold["data"]["material"]["currentPrices"][0]["unitPrice"] == "380.00"
    assert cold["extensions"]["queryStats"]["sqlRoundTrips"] >= 2
    assert hot["extensions"]["queryStats"]["sqlRoundTrips"] == 0


async def test_a_new_instance_is_served_from_redis(
    rows_cached: httpx.AsyncClient, conn: asyncpg.Connection, database_url: str, redis_prefix: str
) -> None:
    mid, _, _ = await _material(conn)
    variables = {"id": to_global_id("Material", mid)}
    first = await gql(rows_cached, MATERIAL, variables)
    settings = make_settings(database_url, redis_url=SHARED_REDIS, cache_prefix=redis_prefix, response_cache=False)
    async with app_client(settings) as other:
        # A new instance reads the recent outbox once, on its first cached read.
        await gql(other, "query($id: ID!) { material(id: $id) { unit { code } } }", {"id": to_global_id("Material", 0)})
        second = await gql(other, MATERIAL, variables)
    assert second["data"] == first["data"]
    assert second["extensions"]["queryStats"]["sqlRoundTrips"] == 0


async def test_mutations_drop_what_they_changed(cached: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    mid, supplier, _ = await _material(conn)
    variables = {"id": to_global_id("Material", mid)}
    await gql_data(cached, MATERIAL, variables)
    patch = """mutation($id: ID!, $patch: MaterialPatch!) { updateMaterial(id: $id, patch: $patch) { errors { code } } }"""
    await gql_data(cached, patch, {**variables, "patch": {"name": "Цемент М500 Д0", "sku": "CEM-2"}})
    after = (await gql_data(cached, MATERIAL, variables))["material"]
    assert (after["name"], after["sku"]) == ("Цемент М500 Д0", "CEM-2")
    by_sku = "query($sku: String!) { material(sku: $sku) { name } }"
    assert (await gql_data(cached, by_sku, {"sku": "CEM-3"}))["material"] is None  # remembered as missing
    await gql_data(cached, patch, {**variables, "patch": {"sku": "CEM-3"}})
    assert (await gql_data(cached, by_sku, {"sku": "CEM-3"}))["material"] == {"name": "Цемент М500 Д0"}
    await gql_data(cached, "mutation($id: ID!) { deleteMaterial(id: $id) { errors { code } } }", variables)
    assert (await gql_data(cached, MATERIAL, variables))["material"] is None

    node = "query($id: ID!) { node(id: $id) { ... on Supplier { name } } }"
    next_id = to_global_id("Supplier", supplier + 1)
    assert (await gql_data(cached, node, {"id": next_id}))["node"] is None
    await gql_data(cached, 'mutation { createSupplier(name: "АО «Новый»") { errors { code } } }')
    assert (await gql_data(cached, node, {"id": next_id}))["node"] == {"name": "АО «Новый»"}


async def test_imports_and_archiving_drop_prices_and_price_lists(
    cached: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    supplier = await insert_supplier(conn, "ЗАО «Архив»")
    query = """query($id: ID!) { node(id: $id) { ... on Supplier { priceLists(first: 5) { edges { node {
        id version status } } } } } }"""

    async def upload(version: int, month: int) -> None:
        doc = """mutation($s: ID!, $f: Upload!, $at: DateTime) { importPriceList(supplierId: $s, file: $f, effectiveAt: $at) {
          priceList { version } errors { message } } }"""
        path = SAMPLES / f"test_price_v{version}.csv"
        operations = json.dumps({"query": doc, "variables": {"s": to_global_id("Supplier", supplier), "f": None,
                                                             "at": datetime(2024, month, 1, tzinfo=UTC).isoformat()}})
        response = await cached.post("/graphql", headers={"GraphQL-Preflight": "1"},
                                     data={"operations": operations, "map": json.dumps({"0": ["variables.f"]})},
                                     files={"0": (path.name, path.read_bytes(), "text/csv")})
        assert response.json()["data"]["importPriceList"]["errors"] == [], response.text

    await upload(1, 1)
    cement = await conn.fetchval("SELECT id FROM materials WHERE name = 'Цемент М400'")
    prices = "query($id: ID!) { material(id: $id) { currentPrices { unitPrice priceList { version status } } } }"
    before = (await gql_data(cached, prices, {"id": to_global_id("Material", cement)}))["material"]["currentPrices"]
    assert [p["priceList"]["version"] for p in before] == [1]
    await upload(2, 2)
    after = (await gql_data(cached, prices, {"id": to_global_id("Material", cement)}))["material"]["currentPrices"]
    assert [p["priceList"] for p in after] == [{"version": 2, "status": "ACTIVE"}]
    assert after[0]["unitPrice"] != before[0]["unitPrice"]
    v1 = await conn.fetchval("SELECT id FROM price_lists WHERE version = 1")
    status = "query($id: ID!) { priceList(id: $id) { status } }"
    assert (await gql_data(cached, status, {"id": to_global_id("PriceList", v1)}))["priceList"]["status"] == "SUPERSEDED"
    await gql_data(cached, 'mutation { archivePriceLists(before: "2024-03-01T00:00:00Z") }')
    assert (await gql_data(cached, status, {"id": to_global_id("PriceList", v1)}))["priceList"]["status"] == "ARCHIVED"
    listed = await gql_data(cached, query, {"id": to_global_id("Supplier", supplier)})
    assert [e["node"]["status"] for e in listed["node"]["priceLists"]["edges"]] == ["ACTIVE", "ARCHIVED"]


async def test_an_import_from_the_command_line_is_seen_at_once(
    cached: httpx.AsyncClient, conn: asyncpg.Connection, database_url: str, redis_prefix: str
) -> None:
    import asyncio
    import os
    import sys

    await insert_supplier(conn, "ЗАО «Архив»")
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": SHARED_REDIS, "CACHE_PREFIX": redis_prefix,
           "SEED_DEMO": "0"}

    async def cli_import(version: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "server.py", "import", str(SAMPLES / f"test_price_v{version}.csv"), "--supplier",
            "ЗАО «Архив»", "--quiet", cwd=REPO, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()

    await cli_import(1)
    cement = await conn.fetchval("SELECT id FROM materials WHERE name = 'Цемент М400'")
    prices = "query($id: ID!) { material(id: $id) { currentPrices { priceList { version } } } }"
    variables = {"id": to_global_id("Material", cement)}
    for _ in range(2):  # hot now
        assert (await gql_data(cached, prices, variables))["material"]["currentPrices"] == [{"priceList": {"version": 1}}]
    await cli_import(2)
    assert (await gql_data(cached, prices, variables))["material"]["currentPrices"] == [{"priceList": {"version": 2}}]
