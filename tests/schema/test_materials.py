"""The read side of the contract through HTTP: lookups, relations, filters, orderings."""

from __future__ import annotations

import base64

import asyncpg
import httpx

from tests.catalog_fixtures import small_catalog
from tests.conftest import gql, gql_data


def gid(type_name: str, pk: int) -> str:
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode()


async def names(client: httpx.AsyncClient, flt: dict, **args: object) -> list[str]:
    data = await gql_data(
        client,
        "query($f: MaterialFilter, $o: MaterialOrder) { materials(filter: $f, orderBy: $o, first: 50) "
        "{ totalCount edges { node { name } } } }",
        {"f": flt, "o": args.get("order")},
    )
    conn = data["materials"]
    assert conn["totalCount"] == len(conn["edges"])
    return [e["node"]["name"] for e in conn["edges"]]


async def test_material_by_id_with_relations(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    c = await small_catalog(conn)
    data = await gql_data(
        client,
        """query($id: ID!) { material(id: $id) {
            id sku name unit { code name aliases } category { name parent { name } }
            currentPrices { unitPrice currency supplier { name } priceList { version status } }
            bestPrice { unitPrice supplier { name } }
            usd: bestPrice(currency: "USD") { unitPrice }
            priceHistory(first: 10) { edges { node { unitPrice validFrom supplier { name } } } }
        } }""",
        {"id": gid("Material", c.materials["cem400"])},
    )
    m = data["material"]
    assert m["id"] == gid("Material", c.materials["cem400"])
    assert (m["sku"], m["name"]) == ("CEM0001", "Цемент М400 50кг")
    assert m["unit"]["code"] == "мешок" and "меш" in m["unit"]["aliases"]
    assert m["category"] == {"name": "Цемент", "parent": {"name": "Вяжущие материалы"}}
    # Current: A's active list (v2, 320.00) and B's (310.50); A's superseded 300.00 is history only.
    current = sorted((p["supplier"]["name"], p["unitPrice"], p["priceList"]["version"]) for p in m["currentPrices"])
    assert current == [("АО «Металлснаб»", "310.50", 1), ("ООО «СтройТорг»", "320.00", 2)]
    assert m["bestPrice"] == {"unitPrice": "310.50", "supplier": {"name": "АО «Металлснаб»"}}
    assert m["usd"] is None
    history = [e["node"]["unitPrice"] for e in m["priceHistory"]["edges"]]
    assert history == ["310.50", "320.00", "300.00"]  # newest first


async def test_material_by_sku_and_node(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    c = await small_catalog(conn)
    data = await gql_data(
        client,
        """query($node: ID!, $cat: ID!) {
            bySku: material(sku: "ARM0001") { name }
            missing: material(sku: "NOPE") { name }
            node(id: $node) { id ... on Material { name } }
            cat: node(id: $cat) { ... on Category { name children { name } } }
        }""",
        {"node": gid("Material", c.materials["sand"]), "cat": gid("Category", c.categories["metal"])},
    )
    assert data["bySku"] == {"name": "Арматура А500С Ø12мм"}
    assert data["missing"] is None
    assert data["node"] == {"id": gid("Material", c.materials["sand"]), "name": "Песок речной"}
    assert data["cat"] == {"name": "Металлопрокат", "children": [{"name": "Арматура"}]}


async def test_deleted_material_is_not_found_but_history_still_reaches_it(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    c = await small_catalog(conn)
    await conn.execute("UPDATE materials SET deleted_at = now() WHERE id = $1", c.materials["sand"])
    data = await gql_data(
        client,
        """query($id: ID!, $pl: ID!) { material(id: $id) { name }
             priceList(id: $pl) { prices { edges { node { material { name } } } } } }""",
        {"id": gid("Material", c.materials["sand"]), "pl": gid("PriceList", c.price_lists["a1"])},
    )
    assert data["material"] is None
    assert {"material": {"name": "Песок речной"}} in [e["node"] for e in data["priceList"]["prices"]["edges"]]


async def test_every_material_filter(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    c = await small_catalog(conn)
    binders = gid("Category", c.categories["binders"])
    assert await names(client, {"categoryId": binders}) == ["Известь гашёная", "Цемент М400 50кг", "Цемент М500 50кг"]
    assert await names(client, {"categoryId": binders, "includeSubcategories": False}) == ["Известь гашёная"]
    # Units by any alias: м3, куб.м and m3 all mean м³.
    for alias in ("м3", "куб.м", "m3", "м³"):
        assert await names(client, {"unit": alias}) == ["Песок речной", "Щебень гранитный 5-20мм"]
    assert await names(client, {"supplierId": gid("Supplier", c.suppliers["b"])}) == [
        "Арматура А500С Ø12мм", "Арматура А500С Ø14мм", "Цемент М400 50кг", "Цемент М500 50кг",
    ]
    # Price range on the best current RUB price: cem400 310.50, cem500 380.00, sand 1100.00.
    assert await names(client, {"priceMin": "300", "priceMax": "400"}) == ["Цемент М400 50кг", "Цемент М500 50кг"]
    assert await names(client, {"priceMax": "5.50", "currency": "USD"}) == ["Цемент М500 50кг"]
    assert await names(client, {"skuPrefix": "ARM"}) == ["Арматура А500С Ø12мм", "Арматура А500С Ø14мм"]
    assert await names(client, {"skuPrefix": "AR%"}) == []  # LIKE wildcards are literal
    await conn.execute("UPDATE materials SET updated_at = '2030-01-01' WHERE id = $1", c.materials["gravel"])
    assert await names(client, {"updatedSince": "2029-12-31T00:00:00+00:00"}) == ["Щебень гранитный 5-20мм"]


async def test_orderings(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    await small_catalog(conn)
    by_sku_desc = await names(client, {}, order={"field": "SKU", "direction": "DESC"})
    assert by_sku_desc[:3] == ["Песок речной", "Известь гашёная", "Цемент М500 50кг"]
    assert by_sku_desc[-1] == "Щебень гранитный 5-20мм"  # no SKU sorts as ''
    by_created = await names(client, {}, order={"field": "CREATED_AT"})
    assert by_created[0] == "Цемент М400 50кг"


async def test_bad_arguments_get_clear_errors(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    await small_catalog(conn)
    cases = {
        "{ materials(first: 500) { totalCount } }": "first: must be at most 100 (got 500)",
        '{ materials(after: "garbage") { totalCount } }': 'after: "garbage" is not a valid cursor',
        '{ materials(filter: {unit: "parsecs"}) { totalCount } }': 'filter.unit: unknown unit "parsecs"',
        '{ materials(filter: {categoryId: "U3VwcGxpZXI6MQ=="}) { totalCount } }':
            "filter.categoryId: \"U3VwcGxpZXI6MQ==\" is the ID of a Supplier, expected a Category",
        '{ materials(filter: {priceMin: "10", priceMax: "1"}) { totalCount } }': "filter.priceMin: is greater than priceMax",
        '{ material(id: "bm9wZQ==") { name } }': 'id: "bm9wZQ==" is not a valid ID',
    }
    for query, message in cases.items():
        body = await gql(client, query)
        assert body["errors"], query
        assert message in body["errors"][0]["message"], (query, body["errors"])
        assert body["errors"][0]["extensions"]["code"] == "VALIDATION"


async def test_category_materials_and_supplier_price_lists(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    c = await small_catalog(conn)
    data = await gql_data(
        client,
        """{ categories { name materials(first: 2) { totalCount edges { node { name } } pageInfo { hasNextPage } } }
             suppliers { edges { node { name priceLists { edges { node { version status rowCount
               prices(first: 2) { edges { node { unitPrice } } pageInfo { hasNextPage } } } } } } } } }""",
    )
    cats = {x["name"]: x["materials"] for x in data["categories"]}
    assert list(cats) == ["Вяжущие материалы", "Металлопрокат", "Сыпучие материалы"]
    assert cats["Вяжущие материалы"]["totalCount"] == 3
    assert [e["node"]["name"] for e in cats["Вяжущие материалы"]["edges"]] == ["Известь гашёная", "Цемент М400 50кг"]
    assert cats["Вяжущие материалы"]["pageInfo"]["hasNextPage"] is True
    assert cats["Металлопрокат"]["totalCount"] == 2 and cats["Металлопрокат"]["pageInfo"]["hasNextPage"] is False
    sup = {e["node"]["name"]: e["node"]["priceLists"]["edges"] for e in data["suppliers"]["edges"]}
    a_lists = [(x["node"]["version"], x["node"]["status"], x["node"]["rowCount"]) for x in sup["ООО «СтройТорг»"]]
    assert a_lists == [(2, "ACTIVE", 3), (1, "SUPERSEDED", 2)]
    v2_prices = sup["ООО «СтройТорг»"][0]["node"]["prices"]
    assert [e["node"]["unitPrice"] for e in v2_prices["edges"]] == ["320.00", "380.00"]
    assert v2_prices["pageInfo"]["hasNextPage"] is True
    assert c.suppliers  # ids were created


async def test_units_and_decimal_strings(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    await small_catalog(conn)
    data = await gql_data(client, "{ units { code aliases } }")
    codes = {u["code"]: u["aliases"] for u in data["units"]}
    assert {"шт", "кг", "м³", "м²", "м", "л", "т", "мешок"} <= set(codes)
    assert {"м3", "куб.м", "m3"} <= set(codes["м³"])
    body = await client.post("/graphql", json={"query": '{ material(sku: "ARM0001") { bestPrice { unitPrice } } }'})
    assert b'"unitPrice":"64000.00"' in body.content  # a string on the wire, never a float
