"""Materials, their connection type and filter/order inputs."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import asyncpg
import strawberry
from strawberry.scalars import JSON

from loaders.base import category_of, supplier_of, unit_of
from resolvers import prices as price_resolvers
from resolvers.context import Context
from resolvers.ids import to_global_id
from resolvers.pagination import Page
from schema.category import Category
from schema.node import Edge, Node, PageInfo, edges_around
from schema.page_render import page_renderer, render_edges
from schema.prefetch import Relation
from schema.unit import Unit

if TYPE_CHECKING:
    from schema.price import Price, PriceConnection
    from schema.search import SearchHit


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@strawberry.enum
class OrderDirection(Enum):
    ASC = "ASC"
    DESC = "DESC"


@strawberry.enum
class MaterialOrderField(Enum):
    NAME = "NAME"
    SKU = "SKU"
    CREATED_AT = "CREATED_AT"
    UPDATED_AT = "UPDATED_AT"


@strawberry.input
class MaterialOrder:
    field: MaterialOrderField
    direction: OrderDirection | None = OrderDirection.ASC


@strawberry.input
class MaterialFilter:
    category_id: strawberry.ID | None = None
    include_subcategories: bool | None = True
    unit: str | None = strawberry.field(default=None, description="Any alias of a unit (м3, куб.м, m3 ...).")
    supplier_id: strawberry.ID | None = strawberry.field(
        default=None, description="Materials this supplier currently prices."
    )
    price_min: Decimal | None = strawberry.field(default=None, description="On the best current unit price.")
    price_max: Decimal | None = None
    currency: str | None = "RUB"
    sku_prefix: str | None = None
    updated_since: datetime | None = None


@strawberry.type
class Material(Node):
    id: strawberry.ID
    sku: str | None
    name: str
    description: str | None
    color: str | None
    attributes: JSON | None
    pk: strawberry.Private[int]
    created_us: strawberry.Private[int]
    updated_us: strawberry.Private[int]
    category_id: strawberry.Private[int | None]
    unit_code: strawberry.Private[str]
    prefetched: strawberry.Private[dict[str, Any]] = dataclasses.field(default_factory=dict)
    TYPE_NAMES: ClassVar[frozenset[str]] = frozenset({"Material", "Node"})
    RELATIONS: ClassVar[dict[str, Relation]] = {}

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Material:
        return cls(
            id=strawberry.ID(to_global_id("Material", row["id"])),
            sku=row["sku"],
            name=row["name"],
            # A page reads these only when its query selects them (backends.catalog MaterialReadPlan).
            description=row.get("description"),
            color=row.get("color"),
            attributes=row.get("attributes"),
            created_us=row.get("created_us"),
            updated_us=row.get("updated_us"),
            pk=row["id"],
            category_id=row["category_id"],
            unit_code=row["unit_code"],
        )

    @classmethod
    def from_optional_row(cls, row: asyncpg.Record | None) -> Material | None:
        return None if row is None else cls.from_row(row)

    @strawberry.field
    def created_at(self) -> datetime:
        return EPOCH + timedelta(microseconds=self.created_us)

    @strawberry.field
    def updated_at(self) -> datetime:
        return EPOCH + timedelta(microseconds=self.updated_us)

    @strawberry.field
    def category(self, info: strawberry.Info[Context, None]) -> Category | None:
        return self.RELATIONS["category"].resolve(self, info.context)

    @strawberry.field
    def unit(self, info: strawberry.Info[Context, None]) -> Unit:
        return self.RELATIONS["unit"].resolve(self, info.context)

    @strawberry.field(description="Latest price from each supplier.")
    def current_prices(
        self, info: strawberry.Info[Context, None]
    ) -> list[Annotated[Price, strawberry.lazy("schema.price")]]:
        return self.RELATIONS["currentPrices"].resolve(self, info.context)

    @strawberry.field(description="Lowest current unit price in the currency.")
    async def best_price(
        self, info: strawberry.Info[Context, None], currency: str | None = "RUB"
    ) -> Annotated[Price, strawberry.lazy("schema.price")] | None:
        from schema.price import Price

        wanted = (currency or "RUB").strip().upper()
        # The loader's rows are cheapest first, so the first match is the best price.
        for row in await info.context.loaders.current_prices_by_material.load(self.pk):
            if row["currency"] == wanted:
                return Price.from_row(row)
        return None

    @strawberry.field
    async def price_history(
        self,
        info: strawberry.Info[Context, None],
        supplier_id: strawberry.ID | None = None,
        since: datetime | None = None,
        first: int | None = 50,
        after: str | None = None,
    ) -> Annotated[PriceConnection, strawberry.lazy("schema.price")]:
        from schema.price import PriceConnection

        page = await price_resolvers.price_history_page(info.context, self.pk, supplier_id, since, first, after)
        return await PriceConnection.from_page(page, info)

    @strawberry.field(description="Nearest materials by meaning.", metadata={"cost": 5})
    async def similar(
        self, info: strawberry.Info[Context, None], first: int | None = 10
    ) -> list[Annotated[SearchHit, strawberry.lazy("schema.search")]]:
        from resolvers import search as search_resolvers
        from schema.search import hits_of

        return await hits_of(info, await search_resolvers.similar(info.context, self.pk, first))


@strawberry.type
class MaterialEdge(Edge):
    node: Material


@strawberry.type
class MaterialConnection:
    edges: list[MaterialEdge]
    page_info: PageInfo
    count: strawberry.Private[Callable[[], Awaitable[int]]]

    @classmethod
    async def from_page(
        cls, page: Page, count: Callable[[], Awaitable[int]], info: strawberry.Info[Context, None]
    ) -> MaterialConnection:
        if getattr(info.context, "compiled_completion", False):  # the edges straight from the rows (schema.page_render)
            raw = info._raw_info
            renderer = page_renderer(raw.field_nodes, raw.fragments, page.whole_prices)
            rendered = render_edges(renderer, page) if renderer is not None else None
            if rendered is not None:
                return cls(edges=rendered, page_info=PageInfo.of(page), count=count)  # type: ignore[arg-type]
        edges = await edges_around(MaterialEdge, page, material_nodes(page), info)
        return cls(edges=edges, page_info=PageInfo.of(page), count=count)

    @strawberry.field
    async def total_count(self) -> int:
        return await self.count()


def material_nodes(page: Page) -> list[Material]:
    """The page's materials with the relations their rows carry already in place.

    A page's statement reads each material's category and unit as companion columns and,
    when the query selects them, its current prices with supplier names
    (backends.catalog). Building those objects here, once per distinct category, unit and
    supplier, gives `schema.prefetch` nothing left to do for them: it skips relations an
    object already holds. The objects are the ones prefetching through the loaders (which
    the same rows prime) would build. A relation whose companion columns are absent or
    empty (a category the row names but the join did not find) is left to prefetching.
    """
    from schema.price import Price
    from schema.supplier import Supplier

    prices = page.current_prices
    make_price = Price.from_row if page.whole_prices else Price.summary
    categories: dict[int, Category] = {}
    units: dict[str, Unit] = {}
    suppliers: dict[int, Supplier] = {}
    nodes = []
    for row in page.rows:
        material = Material.from_row(row)
        held = material.prefetched
        category_id = row["category_id"]
        if category_id is None:
            held["category"] = None
        else:
            category = _shared(categories, category_id, row, category_of, Category)
            if category is not None:
                held["category"] = category
        unit = _shared(units, material.unit_code, row, unit_of, Unit)
        if unit is not None:
            held["unit"] = unit
        if prices is not None:
            current = held["currentPrices"] = []
            for price_row in prices.get(material.pk, ()):
                price = make_price(price_row)
                supplier = _shared(suppliers, price.supplier_id, price_row, supplier_of, Supplier)
                if supplier is not None:
                    price.prefetched["supplier"] = supplier
                current.append(price)
        nodes.append(material)
    return nodes


def _shared(built: dict[Any, Any], key: Any, row: Any, companion_of: Callable[[Any], Any], cls: Any) -> Any:
    """The object for `key` built once per page from the companion columns of `row` (None if
    the row has none: prefetching then loads it)."""
    found = built.get(key)
    if found is None:
        companion = companion_of(row)
        if companion is not None:
            found = built[key] = cls.from_row(companion[1])
    return found


def _price_rows(rows: list[asyncpg.Record]) -> list[Any]:
    from schema.price import Price

    return Price.from_rows(rows)


Material.RELATIONS.update(
    category=Relation("category", lambda m: m.category_id, lambda c: c.loaders.category_by_id,
                      Category.from_optional_row),
    unit=Relation("unit", lambda m: m.unit_code, lambda c: c.loaders.unit_by_code, Unit.from_row),
    currentPrices=Relation("currentPrices", lambda m: m.pk, lambda c: c.loaders.current_prices_by_material,
                           _price_rows),
)
