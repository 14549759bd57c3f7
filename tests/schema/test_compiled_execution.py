"""The compiled execution path gives exactly what graphql-core alone gives.

Every document below runs through two schemas over the same database: the production one
(CompiledExecutionContext) and one that leaves every field to graphql-core. Data, errors
and error paths must be identical, on the first run and on later runs that reuse the
compiled plans.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import strawberry
from strawberry.extensions import ParserCache, ValidationCache

from backends.catalog import CatalogReader
from backends.postgres import PostgresBackend
from backends.prices import PriceReader
from loaders.registry import RequestLoaders
from resolvers.context import Context
from resolvers.ids import to_global_id
from schema import build_schema
from schema.execution import CompiledExecutionContext
from tests.catalog_fixtures import small_catalog

MATERIAL_PAGE = """query($cat: ID) { materials(first: 10, filter: {categoryId: $cat}) {
  totalCount
  edges { cursor node { __typename id sku name description color attributes createdAt
    unit { code name aliases } category { id name parent { id name } children { id } }
    currentPrices { unitPrice currency buyPrice stock validFrom supplier { id name } priceList { id version status }
                    calcUnit { code } material { sku } }
    cheapest: bestPrice { unitPrice supplier { name } }
    usd: bestPrice(currency: "USD") { unitPrice }
    priceHistory(first: 3) { edges { node { unitPrice validFrom supplier { name } } } pageInfo { hasNextPage } } } }
  pageInfo { hasNextPage endCursor } } }"""

FRAGMENTS = """query($id: ID!, $withPrices: Boolean!, $skipUnit: Boolean!) {
  node(id: $id) { __typename id ...M ... on Category { name } }
  again: material(id: $id) { ...M first: name second: name }
}
fragment M on Material { sku unit @skip(if: $skipUnit) { code } ...P @include(if: $withPrices) }
fragment P on Material { currentPrices { unitPrice ... on Price { currency supplier { ... on Supplier { name } } } } }"""

LITERAL_DIRECTIVES = """{ materials(first: 3) { edges { node { sku unit @include(if: false) { code }
  category @skip(if: false) { name } } } } }"""

TREE = """{ categories { id name parent { id } children { id name children { name } materials(first: 2) {
  edges { node { sku } } } } } units { code } }"""

SUPPLIERS = """{ suppliers(first: 5) { edges { node { name priceLists(first: 5) { edges { node {
  version status supplier { name } prices(first: 5) { edges { node { unitPrice material { sku category { name } } } } } } } } } } } }"""

# Read plans (which columns a page reads) follow the selection through aliases and fragments.
PAGE_THROUGH_FRAGMENTS = """{ materials(first: 10) { edges { node { ... on Node { id } ...Times when: createdAt
  ... on Material { notes: description unit { code } } } } } }
fragment Times on Material { updatedAt category { name } currentPrices { unitPrice } }"""
NARROW_PAGE = """{ materials(first: 10) { edges { node { name } } } }"""

BAD = """query($id: ID!) { material(id: $id) { sku } materials(first: 2, filter: {unit: "парсек"}) { totalCount } }"""


@pytest.fixture
async def schemas(empty_catalog: PostgresBackend, conn: asyncpg.Connection) -> Any:
    catalog_ids = await small_catalog(conn)
    # A material whose category was removed: `category` is nullable and must come out null.
    await conn.execute("INSERT INTO materials (name, unit_code, sku) VALUES ('Без категории', 'шт', 'NOCAT')")
    extensions = [lambda: ParserCache(maxsize=64), lambda: ValidationCache(maxsize=64)]
    return catalog_ids, build_schema(extensions), build_schema(extensions, compiled=False), empty_catalog


async def _run(schema: Any, pg: PostgresBackend, query: str, variables: dict[str, Any]) -> Any:
    catalog, prices = CatalogReader(pg), PriceReader(pg)
    context = Context(request=None, response=None, loaders=RequestLoaders.build(catalog, prices),
                      catalog=catalog, prices=prices)
    result = await schema.execute(query, variable_values=variables, context_value=context)
    errors = sorted((e.message, tuple(e.path or ())) for e in result.errors or [])
    return result.data, errors


async def _same(schemas: Any, query: str, variables: dict[str, Any]) -> Any:
    _, compiled, plain, pg = schemas
    expected = await _run(plain, pg, query, variables)
    for _ in range(3):  # the first run compiles; later runs reuse the plans
        assert await _run(compiled, pg, query, variables) == expected
    return expected


async def test_material_pages_match(schemas: Any) -> None:
    ids = schemas[0]
    data, errors = await _same(schemas, MATERIAL_PAGE, {"cat": None})
    assert not errors and len(data["materials"]["edges"]) == 8
    data, errors = await _same(schemas, MATERIAL_PAGE, {"cat": to_global_id("Category", ids.categories["binders"])})
    assert not errors and [e["node"]["sku"] for e in data["materials"]["edges"]] == ["LIM0001", "CEM0001", "CEM0002"]
    nocat = next(e["node"] for e in (await _same(schemas, MATERIAL_PAGE, {"cat": None}))[0]["materials"]["edges"]
                 if e["node"]["sku"] == "NOCAT")
    assert nocat["category"] is None and nocat["currentPrices"] == []


@pytest.mark.parametrize("with_prices", [True, False])
@pytest.mark.parametrize("skip_unit", [True, False])
async def test_fragments_and_variable_directives_match(schemas: Any, with_prices: bool, skip_unit: bool) -> None:
    material = to_global_id("Material", schemas[0].materials["cem400"])
    variables = {"id": material, "withPrices": with_prices, "skipUnit": skip_unit}
    data, errors = await _same(schemas, FRAGMENTS, variables)
    assert not errors
    assert ("unit" in data["node"]) is not skip_unit
    assert ("currentPrices" in data["again"]) is with_prices
    assert data["again"]["first"] == data["again"]["second"] == "Цемент М400 50кг"


async def test_directive_variables_change_between_runs_of_one_document(schemas: Any) -> None:
    """A document whose directives read variables must not reuse another run's plan."""
    material = to_global_id("Material", schemas[0].materials["sand"])
    _, compiled, _, pg = schemas
    for skip in (True, False, True, False):
        data, _ = await _run(compiled, pg, FRAGMENTS, {"id": material, "withPrices": not skip, "skipUnit": skip})
        assert ("unit" in data["node"]) is not skip
        assert ("currentPrices" in data["again"]) is (not skip)


@pytest.mark.parametrize("query", [LITERAL_DIRECTIVES, TREE, SUPPLIERS, PAGE_THROUGH_FRAGMENTS, NARROW_PAGE])
async def test_other_documents_match(schemas: Any, query: str) -> None:
    data, errors = await _same(schemas, query, {})
    assert not errors and data


async def test_errors_match(schemas: Any) -> None:
    data, errors = await _same(schemas, BAD, {"id": "not-an-id"})
    assert data is None or data.get("material") is None
    assert errors and all(path for _, path in errors)


def test_production_schema_uses_the_compiled_context() -> None:
    assert build_schema().execution_context_class is CompiledExecutionContext


async def test_pages_read_the_columns_their_selection_needs(schemas: Any, conn: asyncpg.Connection) -> None:
    await conn.execute(
        "UPDATE materials SET description = 'Пакет 50 кг', color = 'серый', attributes = '{\"grade\": \"М400\"}' "
        "WHERE sku = 'CEM0001'")
    _, compiled, _, pg = schemas
    doc = """{ materials(first: 20) { edges { node { sku ...D when: createdAt } } } }
    fragment D on Material { notes: description color attributes updatedAt unit { code } category { name } }"""
    data, errors = await _run(compiled, pg, doc, {})
    assert not errors
    cement = next(e["node"] for e in data["materials"]["edges"] if e["node"]["sku"] == "CEM0001")
    assert (cement["notes"], cement["color"], cement["attributes"]) == ("Пакет 50 кг", "серый", {"grade": "М400"})
    assert cement["when"] and cement["updatedAt"] and cement["unit"] == {"code": "мешок"}
    assert cement["category"] == {"name": "Цемент"}


async def test_page_objects_built_from_the_page_rows_match_loading_through_loaders(
    schemas: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page builds its materials with category, unit and current prices (with suppliers)
    from the rows its statement read (schema.material.material_nodes); prefetching through
    the loaders, as before, must give the same answer."""
    import schema.material as material_module

    ids = schemas[0]
    cat = to_global_id("Category", ids.categories["binders"])
    built = [await _same(schemas, MATERIAL_PAGE, {"cat": c}) for c in (None, cat)]
    monkeypatch.setattr(material_module, "material_nodes",
                        lambda page: [material_module.Material.from_row(row) for row in page.rows])
    loaded = [await _same(schemas, MATERIAL_PAGE, {"cat": c}) for c in (None, cat)]
    assert built == loaded
    assert any(e["node"]["currentPrices"] for e in built[0][0]["materials"]["edges"])


@strawberry.type
class _Item:
    name: str


@strawberry.type
class _Box:
    items: list[_Item]
    maybe: list[_Item] | None
    loose: list[_Item | None]
    pairs: tuple[_Item, ...]


@strawberry.type
class _Root:
    @strawberry.field
    def boxes(self) -> list[_Box]:
        ok = [_Item(name="a"), _Item(name="b")]
        return [
            _Box(items=ok, maybe=None, loose=[_Item(name="c"), None], pairs=(ok[0],)),
            _Box(items=[_Item(name="d"), None], maybe=ok, loose=[], pairs=()),  # a null in a non-null list
        ]


@pytest.mark.parametrize("query", [
    "{ boxes { items { name } maybe { name } loose { name } pairs { name } } }",
    "{ boxes { loose { name } maybe { name } pairs { name } } }",
])
async def test_lists_of_objects_complete_as_graphql_core_does(query: str) -> None:
    """Lists of objects, nullable or not, holding nulls or not, lists or tuples: the compiled
    path gives graphql-core's data and errors (a null in `[_Item!]!` nulls the parent)."""
    compiled = strawberry.Schema(query=_Root, execution_context_class=CompiledExecutionContext)
    plain = strawberry.Schema(query=_Root)
    for _ in range(2):
        ours, theirs = await compiled.execute(query), await plain.execute(query)
        assert ours.data == theirs.data
        assert [(e.message, e.path) for e in ours.errors or []] == [(e.message, e.path) for e in theirs.errors or []]
    if "items" in query:
        assert ours.data is None and ours.errors[0].path == ["boxes", 1, "items", 1]
    else:
        assert ours.data["boxes"][0]["loose"] == [{"name": "c"}, None] and not ours.errors


@pytest.mark.parametrize(("prices", "summary"), [
    ("currentPrices { unitPrice currency supplier { id name } }", True),
    ("cheap: currentPrices { __typename price: unitPrice } currentPrices { supplier { name priceLists(first: 1) "
     "{ edges { node { version } } } } }", True),
    ("currentPrices { ...S } ", True),
    ("currentPrices { unitPrice ...S when: validFrom }", False),
    ("currentPrices { unitPrice priceList { version } }", False),
    ("currentPrices { unitPrice } bestPrice { unitPrice }", False),
])
async def test_pages_read_only_the_price_columns_their_selection_needs(
    schemas: Any, monkeypatch: pytest.MonkeyPatch, prices: str, summary: bool
) -> None:
    """A page whose query asks only unit price, currency and supplier of the current prices
    reads just those columns (backends.catalog PRICE_SUMMARY_COLUMNS), through aliases and
    fragments; any other price field reads them whole. Either way the answer is the one
    reading whole prices gives."""
    import schema.query as query_module
    from backends.postgres import track_queries

    doc = ("query($cat: ID) { materials(first: 10, filter: {categoryId: $cat}) { edges { node { sku " + prices
           + " } } } }\nfragment S on Price { currency supplier { name } }")
    if "...S" not in prices:
        doc = doc.split("\nfragment")[0]
    _, compiled, _, pg = schemas
    stats = track_queries(keep_statements=True)
    data, errors = await _run(compiled, pg, doc, {"cat": None})
    assert not errors and any(e["node"].get("currentPrices") for e in data["materials"]["edges"])
    page_sql = next(s for s in stats.statements if "current_prices cp" in s)
    assert ("cp_price_list_id" not in page_sql) is summary
    monkeypatch.setattr(query_module, "PRICE_SUMMARY_FIELDS", frozenset())  # always whole prices
    stats = track_queries(keep_statements=True)
    assert await _run(compiled, pg, doc, {"cat": None}) == (data, errors)
    assert "cp_price_list_id" in next(s for s in stats.statements if "current_prices cp" in s)


RENDERABLE_PAGES = [
    # W2's shape
    """query($cat: ID) { materials(first: 10, filter: {categoryId: $cat}) { edges { node { id sku name
       unit { code name } category { id name } currentPrices { unitPrice currency supplier { id name } } } } } }""",
    # aliases, __typename, cursors, page info and count beside the edges, unit aliases, details
    """query($cat: ID) { materials(first: 10, filter: {categoryId: $cat}) { totalCount pageInfo { endCursor hasNextPage }
       first: edges { cursor __typename node { __typename key: id name description color unit { __typename aliases code } } }
       } }""",
    # the same key twice merges its selections; fragments on the type, on Node, on another type
    """query($cat: ID) { materials(first: 10, filter: {categoryId: $cat}) { edges { node { ...A ... on Node { id }
       category { id } category { name __typename } }
       node { currentPrices { ...P } currentPrices { cheap: unitPrice buyPrice salePrice unitCalcPrice stock } } } } }
       fragment A on Material { name sku }
       fragment P on Price { __typename currency supplier { ... on Supplier { __typename name } } }""",
    # the connection's own fields through a fragment
    """query($cat: ID) { materials(first: 10, filter: {categoryId: $cat}) { ...C } }
       fragment C on MaterialConnection { __typename edges { node { name unit { code } } } pageInfo { hasNextPage } }""",
]


@pytest.mark.parametrize("query", RENDERABLE_PAGES)
async def test_pages_rendered_from_rows_match_the_object_path(
    schemas: Any, monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    """Pages whose selection schema.page_render knows are rendered from their rows, not built
    as objects; the answer is the object path's, key for key and in the same order."""
    import orjson

    import schema.material as material_module

    ids, compiled, plain, pg = schemas
    for cat in (None, to_global_id("Category", ids.categories["binders"])):
        expected = await _run(plain, pg, query, {"cat": cat})
        assert not expected[1] and expected[0]["materials"]
        built = material_module.material_nodes
        monkeypatch.setattr(material_module, "material_nodes", None)  # the object path would fail
        try:
            for _ in range(2):
                got = await _run(compiled, pg, query, {"cat": cat})
                assert orjson.dumps(got[0]) == orjson.dumps(expected[0]) and got[1] == expected[1]
        finally:
            monkeypatch.setattr(material_module, "material_nodes", built)
    assert any(isinstance(v, list) and v for v in expected[0]["materials"].values())  # binders has materials


@pytest.mark.parametrize("query", [
    MATERIAL_PAGE,
    "{ materials(first: 5) { edges { node { name createdAt } } } }",
    "{ materials(first: 5) { edges { node { name bestPrice { unitPrice } } } } }",
    "query($u: Boolean!) { materials(first: 5) { edges { node { name unit @include(if: $u) { code } } } } }",
    "{ materials(first: 5) { edges { node { currentPrices { validFrom } } } } }",
    "{ materials(first: 5) { edges { node { category { parent { name } } } } } }",
    "{ materials(first: 5) { first: edges { node { name } } again: edges { node { sku } } } }",
])
async def test_pages_the_renderer_does_not_know_take_the_object_path(schemas: Any, query: str) -> None:
    from schema.page_render import page_renderer

    _, compiled, plain, pg = schemas
    variables = {"u": True} if "$u" in query else ({"cat": None} if "$cat" in query else {})
    expected = await _run(plain, pg, query, variables)
    assert await _run(compiled, pg, query, variables) == expected
    from graphql import parse

    document = parse(query)
    operation = document.definitions[0]
    field = operation.selection_set.selections[0]
    assert page_renderer([field], {}, True) is None


def test_a_row_the_renderer_cannot_answer_sends_the_page_to_the_object_path() -> None:
    """A unit or supplier the page's joins did not find, a null name: the object path (its
    loaders, its null handling) answers such a page, not the renderer."""
    from graphql import parse

    from resolvers.pagination import Page
    from schema.page_render import page_renderer, render_edges

    document = parse("{ materials { edges { cursor node { name unit { code } category { name } "
                     "currentPrices { unitPrice supplier { name } } } } } }")
    renderer = page_renderer([document.definitions[0].selection_set.selections[0]], {}, False)
    assert renderer is not None
    row = {"id": 1, "sort_key": "a", "name": "Цемент", "unit_code": "т", "unit_name": "тонна", "unit_aliases": "",
           "category_id": None, "category_name": None}
    price = {"unit_price": Decimal("10.50"), "currency": "RUB", "supplier_id": 3, "supplier_name": "ООО «А»"}

    def page(row: dict[str, Any], prices: list[dict[str, Any]]) -> Page:
        return Page("materials:NAME:asc", [row], False, False, {row["id"]: prices}, False)

    rendered = render_edges(renderer, page(row, [price]))
    assert rendered is not None
    node = rendered.value[0]["node"]
    assert node == {"name": "Цемент", "unit": {"code": "т"}, "category": None,
                    "currentPrices": [{"unitPrice": "10.50", "supplier": {"name": "ООО «А»"}}]}
    assert render_edges(renderer, page({**row, "unit_name": None}, [price])) is None
    assert render_edges(renderer, page({**row, "name": None}, [price])) is None
    assert render_edges(renderer, page({**row, "category_id": 2}, [price])) is None  # category not read along
    assert render_edges(renderer, page(row, [{**price, "supplier_name": None}])) is None
