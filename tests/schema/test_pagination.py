"""Keyset pagination: walks that see every row once, even while rows are inserted."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from resolvers.errors import InvalidArgument
from resolvers.ids import to_global_id
from resolvers.pagination import decode_cursor, encode_cursor
from tests.catalog_fixtures import insert_category, insert_material
from tests.conftest import gql, gql_data

WALK = """query($after: String, $order: MaterialOrder) { materials(first: 7, after: $after, orderBy: $order) {
    edges { cursor node { sku } } pageInfo { hasNextPage hasPreviousPage endCursor startCursor } } }"""


async def walk(client: httpx.AsyncClient, order: dict | None, between_pages=None) -> list[str]:
    seen: list[str] = []
    after = None
    for page_no in range(1000):
        data = await gql_data(client, WALK, {"after": after, "order": order})
        conn = data["materials"]
        seen += [e["node"]["sku"] for e in conn["edges"]]
        assert conn["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not conn["pageInfo"]["hasNextPage"]:
            return seen
        after = conn["pageInfo"]["endCursor"]
        if between_pages:
            await between_pages(page_no)
    raise AssertionError("the walk did not end")


@pytest.mark.parametrize(
    "order", [None, {"field": "SKU", "direction": "DESC"}, {"field": "CREATED_AT"}, {"field": "UPDATED_AT", "direction": "DESC"}]
)
async def test_walk_while_inserting_skips_and_repeats_nothing(
    client: httpx.AsyncClient, conn: asyncpg.Connection, order: dict | None
) -> None:
    for i in range(50):
        await insert_material(conn, f"Кирпич облицовочный {i:03d}", "шт", sku=f"BRK{i:04d}")
    inserted: list[str] = []

    async def insert_some(page_no: int) -> None:
        # New rows land before, inside and after the walk's position.
        for j in (page_no * 3, page_no * 3 + 1, page_no * 3 + 2):
            sku = f"NEW{j:04d}"
            name = ("Аааа " if j % 3 == 0 else "Яяяя " if j % 3 == 1 else "Кирпич облицовочный 025") + sku
            await insert_material(conn, name, "шт", sku=sku)
            inserted.append(sku)

    seen = await walk(client, order, insert_some)
    originals = [s for s in seen if s.startswith("BRK")]
    assert len(seen) == len(set(seen)), "a row was repeated"
    assert sorted(originals) == [f"BRK{i:04d}" for i in range(50)], "a row was skipped"
    assert inserted  # the walk really had inserts between its pages


async def test_backward_pagination_mirrors_forward(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    for i in range(12):
        await insert_material(conn, f"Блок газобетонный D{400 + i * 10}", "шт", sku=f"BLK{i:04d}")
    fwd = await gql_data(client, "{ materials(first: 12) { edges { cursor node { sku } } } }")
    skus = [e["node"]["sku"] for e in fwd["materials"]["edges"]]
    last_cursor = fwd["materials"]["edges"][-1]["cursor"]
    back = await gql_data(
        client,
        "query($b: String) { materials(last: 4, before: $b) { edges { node { sku } } "
        "pageInfo { hasNextPage hasPreviousPage } } }",
        {"b": last_cursor},
    )
    assert [e["node"]["sku"] for e in back["materials"]["edges"]] == skus[7:11]
    assert back["materials"]["pageInfo"] == {"hasNextPage": True, "hasPreviousPage": True}
    tail = await gql_data(client, "{ materials(last: 3) { edges { node { sku } } pageInfo { hasPreviousPage } } }")
    assert [e["node"]["sku"] for e in tail["materials"]["edges"]] == skus[-3:]


async def test_cursor_from_another_ordering_is_refused(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    for i in range(3):
        await insert_material(conn, f"Песок {i}", "м³", sku=f"SND{i}")
    data = await gql_data(client, "{ materials(first: 1) { pageInfo { endCursor } } }")
    cursor = data["materials"]["pageInfo"]["endCursor"]
    body = await gql(
        client, "query($a: String) { materials(first: 1, after: $a, orderBy: {field: SKU}) { totalCount } }", {"a": cursor}
    )
    assert "the cursor belongs to another list or ordering" in body["errors"][0]["message"]


def test_cursor_round_trip_keeps_datetimes_and_rejects_tampering() -> None:
    from datetime import UTC, datetime

    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    cursor = encode_cursor("k", when, 42)
    key = decode_cursor(cursor, "k", "after")
    assert (key.value, key.id) == (when, 42)
    with pytest.raises(InvalidArgument, match="is not a valid cursor"):
        decode_cursor(cursor[:-4] + "AAAA", "k", "after")


SUBTREE = """query($cat: ID!, $after: String, $before: String, $first: Int, $last: Int, $dir: OrderDirection) {
  materials(filter: {categoryId: $cat}, first: $first, after: $after, last: $last, before: $before,
            orderBy: {field: NAME, direction: $dir}) {
    edges { node { sku } } pageInfo { hasNextPage hasPreviousPage endCursor startCursor } } }"""


@pytest.mark.parametrize("direction", ["ASC", "DESC"])
async def test_subtree_pages_merge_categories_in_name_order(
    client: httpx.AsyncClient, conn: asyncpg.Connection, direction: str
) -> None:
    """A category with subcategories is read as a merge of per-category pages; the walk must
    still follow the global name order across categories, forwards and backwards."""
    root = await insert_category(conn, "Стеновые материалы")
    kids = [await insert_category(conn, n, root) for n in ("Кирпич", "Блоки")]
    grandchild = await insert_category(conn, "Газобетон", kids[1])
    other = await insert_category(conn, "Кровля")
    homes = [root, *kids, grandchild]
    expected = []
    for i in range(41):
        sku = f"W{i:03d}"
        # Names interleave across the categories, and some repeat (the id breaks the tie).
        await insert_material(conn, f"Материал {(i * 7) % 23:02d}", "шт", sku=sku, category_id=homes[i % 4])
        expected.append(((i * 7) % 23, sku))
    await insert_material(conn, "Материал 00 кровельный", "м²", sku="ROOF", category_id=other)
    ids = {r["sku"]: r["id"] for r in await conn.fetch("SELECT sku, id FROM materials")}
    expected.sort(key=lambda e: (e[0], ids[e[1]]), reverse=direction == "DESC")
    want = [sku for _, sku in expected]
    cat = to_global_id("Category", root)

    seen, after = [], None
    while True:
        page = (await gql_data(client, SUBTREE, {"cat": cat, "after": after, "first": 6, "dir": direction}))["materials"]
        seen += [e["node"]["sku"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == want

    back, before = [], None
    while True:
        page = (await gql_data(client, SUBTREE, {"cat": cat, "before": before, "last": 5, "dir": direction}))["materials"]
        back = [e["node"]["sku"] for e in page["edges"]] + back
        if not page["pageInfo"]["hasPreviousPage"]:
            break
        before = page["pageInfo"]["startCursor"]
    assert back == want

    # Category.materials takes the same path for a page per category.
    nested = await gql_data(client, "query($cat: ID!) { node(id: $cat) { ... on Category { materials(first: 50) { "
                            "edges { node { sku } } } } } }", {"cat": cat})
    ascending = sorted(expected, key=lambda e: (e[0], ids[e[1]]))
    assert [e["node"]["sku"] for e in nested["node"]["materials"]["edges"]] == [sku for _, sku in ascending]
