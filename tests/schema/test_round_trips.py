"""N+1 never happens: the SQL round trips of a query do not grow with the page size."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.catalog_fixtures import JAN, insert_category, insert_material, insert_price_list, insert_supplier
from tests.conftest import app_client, gql, make_settings

PAGE_QUERY = """query($n: Int!) { materials(first: $n) { edges { node {
    name category { name } unit { code } currentPrices { unitPrice supplier { name } } } } } }"""


@pytest.fixture
async def client(database_url: str, empty_catalog: object) -> AsyncIterator[httpx.AsyncClient]:
    """The cold path: with the cache off, every request reads PostgreSQL (tests/schema/test_cache.py
    counts the cached path)."""
    async with app_client(make_settings(database_url, cache=False)) as http:
        yield http


async def fill(conn: asyncpg.Connection, materials: int = 120, suppliers: int = 3) -> int:
    root = await insert_category(conn, "Металлопрокат")
    leaf = await insert_category(conn, "Арматура", root)
    ids = [
        await insert_material(conn, f"Арматура А500С Ø{8 + i % 30}мм партия {i:03d}", "т", sku=f"ARM{i:04d}",
                              category_id=leaf if i % 2 else root)
        for i in range(materials)
    ]
    for s in range(suppliers):
        sid = await insert_supplier(conn, f"ООО «Металлбаза-{s}»")
        await insert_price_list(conn, sid, 1, JAN, [(m, f"{60000 + s * 100 + i}.00", "RUB") for i, m in enumerate(ids)])
    return leaf


async def round_trips(client: httpx.AsyncClient, query: str, variables: dict) -> tuple[int, dict]:
    # The first run of a shape may open pool connections, and a new connection spends
    # round trips on type introspection: count the steady state, which is what every
    # later request pays.
    await gql(client, query, variables)
    body = await gql(client, query, variables)
    assert "errors" not in body, body["errors"]
    return body["extensions"]["queryStats"]["sqlRoundTrips"], body["data"]


async def test_page_of_100_costs_the_same_round_trips_as_page_of_5(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await fill(conn)
    small, data5 = await round_trips(client, PAGE_QUERY, {"n": 5})
    large, data100 = await round_trips(client, PAGE_QUERY, {"n": 100})
    assert len(data5["materials"]["edges"]) == 5 and len(data100["materials"]["edges"]) == 100
    assert all(len(e["node"]["currentPrices"]) == 3 for e in data100["materials"]["edges"])
    # The materials page brings each material's category, unit and current prices (with
    # their suppliers) along: one statement for the whole query.
    assert small == large == 1
    without_prices = PAGE_QUERY.replace("currentPrices { unitPrice supplier { name } }", "")
    assert (await round_trips(client, without_prices, {"n": 100}))[0] == 1


async def test_nested_connections_batch_per_level(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    await fill(conn, materials=40)
    query = """{ categories { name children { name } materials(first: 10) { totalCount edges { node {
        name priceHistory(first: 2) { edges { node { unitPrice supplier { name } priceList { version } } } }
    } } } } }"""
    trips, data = await round_trips(client, query, {})
    assert len(data["categories"]) == 1 and len(data["categories"][0]["materials"]["edges"]) == 10
    # roots; children, material pages, counts; price histories (with their suppliers); price lists.
    assert trips == 6
    for extra in range(4):  # more categories at each level cost nothing more
        root = await insert_category(conn, f"Кровля {extra}")
        await insert_category(conn, f"Металлочерепица {extra}", root)
        await insert_material(conn, f"Профлист С8 {extra}", "м²", category_id=root)
    trips_more, data_more = await round_trips(client, query, {})
    assert len(data_more["categories"]) == 5
    assert trips_more == trips


async def test_w1_material_with_latest_prices(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    await fill(conn, materials=3)
    ids = await conn.fetch("SELECT id FROM materials ORDER BY id")
    import base64

    mid = base64.b64encode(f"Material:{ids[0]['id']}".encode()).decode()
    query = """query($id: ID!) { material(id: $id) { name category { name }
        priceHistory(first: 5) { edges { node { unitPrice supplier { name } } } } } }"""
    trips, data = await round_trips(client, query, {"id": mid})
    assert len(data["material"]["priceHistory"]["edges"]) == 3
    assert trips == 2  # material (with its category); history (with its suppliers)


async def test_loaders_answer_from_rows_the_page_read_along(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    """`bestPrice` and `node(id:)` ask the loaders for current prices and a category the page
    statement already read: the rows it remembered answer them (loaders.base.KnownRows)."""
    leaf = await fill(conn, materials=20)
    import base64

    category = base64.b64encode(f"Category:{leaf}".encode()).decode()
    query = """query($n: Int!, $cat: ID!) { materials(first: $n) { edges { node { name category { name }
        currentPrices { unitPrice } bestPrice { unitPrice supplier { name } } } } }
        node(id: $cat) { ... on Category { name } } }"""
    trips, data = await round_trips(client, query, {"n": 20, "cat": category})
    nodes = [e["node"] for e in data["materials"]["edges"]]
    assert all(n["bestPrice"]["unitPrice"] == n["currentPrices"][0]["unitPrice"] for n in nodes)
    assert {n["bestPrice"]["supplier"]["name"] for n in nodes} == {"ООО «Металлбаза-0»"}
    assert data["node"] == {"name": "Арматура"}
    # The page (with prices and suppliers) and the node's category lookup run side by side;
    # the category is read by the page too, but `node` asks before the page has answered.
    assert trips <= 2
    without_node = query.replace("node(id: $cat) { ... on Category { name } }", "").replace(", $cat: ID!", "")
    assert (await round_trips(client, without_node, {"n": 20}))[0] == 1


async def test_a_page_selected_through_fragments_reads_its_relations_along(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    """Fragments on the connection and on its edges are seen when the page decides what to
    read along (category, unit, current prices): still one statement, as written inline."""
    await fill(conn, materials=30)
    query = """query($n: Int!) { materials(first: $n) { ...Page } }
        fragment Page on MaterialConnection { edges { ...Edge } }
        fragment Edge on MaterialEdge { node { name category { name } unit { code }
            currentPrices { unitPrice supplier { name } } } }"""
    trips, data = await round_trips(client, query, {"n": 30})
    inline_trips, inline = await round_trips(client, PAGE_QUERY, {"n": 30})
    assert data == inline and len(data["materials"]["edges"]) == 30
    assert trips == inline_trips == 1
