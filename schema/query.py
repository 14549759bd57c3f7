"""The Query root of the read side."""

from __future__ import annotations

import strawberry

from backends.catalog import MaterialReadPlan
from resolvers import catalog as catalog_resolvers
from resolvers import search as search_resolvers
from resolvers.context import Context
from resolvers.errors import InvalidArgument
from resolvers.ids import decode_id, parse_global_id
from schema.category import Category
from schema.material import Material, MaterialConnection, MaterialFilter, MaterialOrder, OrderDirection
from schema.node import Node
from schema.prefetch import fields_of, nested, prefetch_direct, selections_under
from schema.price import Price, PriceList
from schema.search import SearchHit, SearchMode, SearchResult, hits_of, search_result
from schema.supplier import Supplier, SupplierConnection
from schema.unit import Unit

DETAIL_FIELDS = frozenset({"description", "color", "attributes"})
PRICE_FIELDS = frozenset({"currentPrices", "bestPrice"})
TIME_FIELDS = frozenset({"createdAt", "updatedAt"})
# What a price read with PRICE_SUMMARY_COLUMNS can answer (schema.price Price.summary).
PRICE_SUMMARY_FIELDS = frozenset({"__typename", "unitPrice", "currency", "supplier"})


def read_plan(info: strawberry.Info[Context, None]) -> MaterialReadPlan:
    """What the page's rows must bring, from what the query selects under `edges.node`."""
    node = selections_under(info, "edges", "node")
    selected = {f.name for f in fields_of(node, Material.TYPE_NAMES)}
    whole_prices = True
    if "currentPrices" in selected and "bestPrice" not in selected:
        # Only the unit price, currency and supplier of each price (every alias and fragment):
        # the page reads just those columns (backends.catalog PRICE_SUMMARY_COLUMNS).
        asked = {f.name for f in fields_of(nested(node, "currentPrices"), Price.TYPE_NAMES)}
        whole_prices = not asked <= PRICE_SUMMARY_FIELDS
    return MaterialReadPlan(
        details=bool(selected & DETAIL_FIELDS), timestamps=bool(selected & TIME_FIELDS),
        category="category" in selected, unit="unit" in selected, current_prices=bool(selected & PRICE_FIELDS),
        whole_prices=whole_prices,
    )


@strawberry.type
class Query:
    @strawberry.field
    async def node(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> Node | None:
        parsed = parse_global_id(id)
        if parsed is None:
            raise InvalidArgument(["id"], f'"{id}" is not a valid ID')
        type_name, pk = parsed
        loaders = info.context.loaders
        node: Node | None
        if type_name == "Material":
            row = await loaders.material_by_id.load(pk)
            node = Material.from_row(row) if row and not row["deleted"] else None
        elif type_name == "Category":
            node = Category.from_optional_row(await loaders.category_by_id.load(pk))
        elif type_name == "Supplier":
            row = await loaders.supplier_by_id.load(pk)
            node = Supplier.from_row(row) if row else None
        elif type_name == "PriceList":
            node = PriceList.from_optional_row(await loaders.price_list_by_id.load(pk))
        else:
            raise InvalidArgument(["id"], f'"{id}" names an unknown type {type_name}')
        if node is not None:
            await prefetch_direct(info, [node])
        return node

    @strawberry.field
    async def material(
        self, info: strawberry.Info[Context, None], id: strawberry.ID | None = None, sku: str | None = None
    ) -> Material | None:
        row = await catalog_resolvers.material_by_id_or_sku(info.context, id, sku)
        if row is None:
            return None
        material = Material.from_row(row)
        await prefetch_direct(info, [material])
        return material

    @strawberry.field
    async def materials(
        self,
        info: strawberry.Info[Context, None],
        filter: MaterialFilter | None = None,
        order_by: MaterialOrder | None = None,
        first: int | None = 20,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> MaterialConnection:
        sort = order_by.field.value if order_by else "NAME"
        descending = bool(order_by and order_by.direction == OrderDirection.DESC)
        spec = catalog_resolvers.filter_spec(filter)
        page, total = await catalog_resolvers.materials_page(
            info.context, spec, sort, descending, first, after, last, before, read_plan(info)
        )
        return await MaterialConnection.from_page(page, total, info)

    @strawberry.field(description="Roots when parentId is null.")
    async def categories(
        self, info: strawberry.Info[Context, None], parent_id: strawberry.ID | None = None
    ) -> list[Category]:
        info.context.depends_on("list:categories")
        if parent_id is None:
            rows = await info.context.catalog.root_categories()
        else:
            rows = await info.context.loaders.categories_by_parent.load(
                decode_id(parent_id, "Category", ["parentId"])
            )
        categories = Category.from_rows(rows)
        await prefetch_direct(info, categories)
        return categories

    @strawberry.field
    async def units(self, info: strawberry.Info[Context, None]) -> list[Unit]:
        info.context.depends_on("units")
        return [Unit.from_row(r) for r in await info.context.catalog.all_units()]

    @strawberry.field
    async def suppliers(
        self, info: strawberry.Info[Context, None], first: int | None = 20, after: str | None = None
    ) -> SupplierConnection:
        return await SupplierConnection.from_page(await catalog_resolvers.suppliers_page(info.context, first, after), info)

    @strawberry.field
    async def price_list(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> PriceList | None:
        price_list = PriceList.from_optional_row(
            await info.context.loaders.price_list_by_id.load(decode_id(id, "PriceList", ["id"]))
        )
        if price_list is not None:
            await prefetch_direct(info, [price_list])
        return price_list

    # Search costs more than a catalog read (text and vector sides, an embedding) and has a
    # per-caller limit of its own on top of the budget (middleware.cost, middleware.protection).
    @strawberry.field(metadata={"cost": 10, "rate_limit": "120/minute"})
    async def search(
        self,
        info: strawberry.Info[Context, None],
        query: str,
        filter: MaterialFilter | None = None,
        mode: SearchMode | None = SearchMode.HYBRID,
        first: int | None = 20,
        after: str | None = None,
    ) -> SearchResult:
        page = await search_resolvers.search(info.context, query, filter, (mode or SearchMode.HYBRID).value,
                                            first, after)
        return await search_result(info, page)

    @strawberry.field(description="Completions for a search box, most popular first.")
    async def suggest(self, info: strawberry.Info[Context, None], prefix: str, first: int | None = 10) -> list[str]:
        return await search_resolvers.suggest(info.context, prefix, first)

    @strawberry.field(description="Catalog candidates for a raw supplier row, best first (used when importing price lists).",
                      metadata={"cost": 10})
    async def match_material(
        self, info: strawberry.Info[Context, None], name: str, unit: str | None = None, first: int | None = 5
    ) -> list[SearchHit]:
        return await hits_of(info, await search_resolvers.match_material(info.context, name, unit, first))
