"""Archiving through GraphQL: history, price lists and their prices answer the same after the
rows moved to prices_archive, in as many round trips; current prices never change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from backends.imports import import_price_list
from backends.postgres import PostgresBackend
from resolvers.ids import to_global_id
from tests.backends.test_archive import drop_archive_partitions
from tests.conftest import app_client, gql, gql_data, make_settings

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "supplier-samples"

READ = """query($material: ID!, $supplier: ID!, $list: ID!) {
  material(id: $material) {
    currentPrices { unitPrice supplier { name } priceList { version status } }
    bestPrice { unitPrice }
    priceHistory(first: 10) { edges { cursor node { unitPrice validFrom priceList { version } } } }
    older: priceHistory(first: 2, since: "2024-01-01T00:00:00Z") { edges { node { unitPrice } } }
  }
  supplier: node(id: $supplier) { ... on Supplier { priceLists(first: 10) { edges { node {
    version rowCount prices(first: 3) { edges { cursor node { unitPrice material { name } } } } } } } } }
  priceList(id: $list) { version status archivedAt prices(first: 50) { edges { node { unitPrice validFrom } } } }
}"""
REPORT = """mutation($before: DateTime!) { archivePriceListsReport(before: $before) {
  priceLists prices rowsMoved rowsAttached partitionsAttached errors { field code message } } }"""


def without_statuses(data: Any) -> Any:
    """The answer with the price lists' statuses left out: those are what archiving changes."""
    if isinstance(data, dict):
        return {k: without_statuses(v) for k, v in data.items() if k not in ("status", "archivedAt")}
    if isinstance(data, list):
        return [without_statuses(v) for v in data]
    return data


async def three_versions(conn: asyncpg.Connection, pg: PostgresBackend) -> dict[str, str]:
    await drop_archive_partitions(conn)
    supplier = await conn.fetchval("INSERT INTO suppliers (name) VALUES ('ЗАО «Архив»') RETURNING id")
    lists = [
        (await import_price_list(pg, supplier, SAMPLES / f"test_price_v{v}.csv",
                                 effective_at=datetime(2024, v, 1, tzinfo=UTC))).price_list_id
        for v in (1, 2, 3)
    ]
    cement = await conn.fetchval("SELECT id FROM materials WHERE name = 'Цемент М400'")
    return {"material": to_global_id("Material", cement), "supplier": to_global_id("Supplier", supplier),
            "list": to_global_id("PriceList", lists[0])}


async def read(client: httpx.AsyncClient, ids: dict[str, str]) -> tuple[int, dict]:
    await gql(client, READ, ids)  # a new pool connection spends round trips on introspection
    body = await gql(client, READ, ids)
    assert "errors" not in body, body["errors"]
    return body["extensions"]["queryStats"]["sqlRoundTrips"], body["data"]


@pytest.fixture
async def cold_client(database_url: str, empty_catalog: PostgresBackend) -> AsyncIterator[httpx.AsyncClient]:
    """The cache off: every read executes, so its SQL round trips can be counted."""
    async with app_client(make_settings(database_url, cache=False)) as http:
        yield http


async def test_history_and_price_lists_answer_the_same_after_archiving(
    cold_client: httpx.AsyncClient, conn: asyncpg.Connection, empty_catalog: PostgresBackend
) -> None:
    client = cold_client
    ids = await three_versions(conn, empty_catalog)
    trips, before = await read(client, ids)
    assert len(before["material"]["priceHistory"]["edges"]) == 3
    assert before["priceList"]["status"] == "SUPERSEDED"

    report = await gql_data(client, REPORT, {"before": "2024-12-31T00:00:00Z"})

    moved = report["archivePriceListsReport"]
    assert moved["errors"] == [] and moved["priceLists"] == 2
    assert moved["prices"] == await conn.fetchval("SELECT count(*) FROM prices_archive") > 0
    # v1 (January) and v2 (February) each had their month to themselves.
    assert moved["partitionsAttached"] == ["prices_archive_2024_01", "prices_archive_2024_02"]
    assert moved["rowsAttached"] == moved["prices"] and moved["rowsMoved"] == 0
    assert await conn.fetchval(
        "SELECT count(*) FROM prices p JOIN price_lists pl ON pl.id = p.price_list_id WHERE pl.status <> 'ACTIVE'") == 0

    trips_after, after = await read(client, ids)
    assert after["priceList"]["status"] == "ARCHIVED" and after["priceList"]["archivedAt"] is not None
    assert before["priceList"]["archivedAt"] is None
    assert without_statuses(after) == without_statuses(before)
    assert after["material"]["currentPrices"] == before["material"]["currentPrices"]
    assert trips_after == trips  # the archive is read in the same statements, one per level

    again = await gql_data(client, REPORT, {"before": "2024-12-31T00:00:00Z"})
    assert again["archivePriceListsReport"]["priceLists"] == 0
    assert again["archivePriceListsReport"]["prices"] == 0
    audit = await conn.fetch("SELECT outcome FROM audit_log WHERE operation = 'archivePriceListsReport'")
    assert [a["outcome"] for a in audit] == ["ok", "ok"]


async def test_archive_report_refuses_a_date_without_time_zone(
    client: httpx.AsyncClient, conn: asyncpg.Connection, empty_catalog: PostgresBackend
) -> None:
    await three_versions(conn, empty_catalog)
    report = await gql_data(client, REPORT, {"before": "2024-12-31T00:00:00"})
    assert [(e["field"], e["code"]) for e in report["archivePriceListsReport"]["errors"]] == [(["before"], "VALIDATION")]
    assert await conn.fetchval("SELECT count(*) FROM prices_archive") == 0
    assert await conn.fetchval("SELECT count(*) FROM price_lists WHERE status = 'ARCHIVED'") == 0


async def test_imports_after_archiving_land_in_prices_and_current_prices_ignore_the_archive(
    client: httpx.AsyncClient, conn: asyncpg.Connection, empty_catalog: PostgresBackend
) -> None:
    ids = await three_versions(conn, empty_catalog)
    await gql_data(client, REPORT, {"before": "2024-12-31T00:00:00Z"})
    archived = await conn.fetchval("SELECT count(*) FROM prices_archive")
    supplier = await conn.fetchval("SELECT id FROM suppliers")
    # v4 dated in January, whose partition went to the archive: it lands in prices all the same.
    v4 = await import_price_list(empty_catalog, supplier, SAMPLES / "test_price_v4.csv",
                                 effective_at=datetime(2024, 1, 20, tzinfo=UTC))
    assert await conn.fetchval("SELECT count(*) FROM prices_2024_01 WHERE price_list_id = $1", v4.price_list_id) \
        == v4.row_count > 0
    assert await conn.fetchval("SELECT count(*) FROM prices_archive") == archived
    # A cheaper price planted in the archive: history shows it, current prices never do.
    cement = await conn.fetchval("SELECT id FROM materials WHERE name = 'Цемент М400'")
    old_list = await conn.fetchval("SELECT id FROM price_lists WHERE version = 1")
    await conn.execute("INSERT INTO prices_archive (id, material_id, supplier_id, price_list_id, unit_price, currency, "
                       "valid_from) VALUES (-1, $1, $2, $3, 1, 'RUB', '2024-01-02+00')", cement, supplier, old_list)
    data = await gql_data(client, """query($id: ID!) { material(id: $id) { currentPrices { unitPrice priceList { version } }
        bestPrice { unitPrice } priceHistory(first: 10) { edges { node { unitPrice } } } } }""", {"id": ids["material"]})
    material = data["material"]
    assert [p["priceList"]["version"] for p in material["currentPrices"]] == [4]
    assert material["bestPrice"]["unitPrice"] == material["currentPrices"][0]["unitPrice"] != "1"
    history = [e["node"]["unitPrice"] for e in material["priceHistory"]["edges"]]
    assert history == ["340.00", "320.00", "360.00", "1", "300.00"]  # v3, v2, v4 (Jan 20), planted (Jan 2), v1
