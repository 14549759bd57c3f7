"""Prices, price lists and their connection types."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import asyncpg
import strawberry

from resolvers import prices as price_resolvers
from resolvers.context import Context
from resolvers.ids import to_global_id
from resolvers.pagination import Page
from schema.node import Edge, Node, PageInfo, edges_of
from schema.prefetch import Relation
from schema.unit import Unit

if TYPE_CHECKING:
    from schema.material import Material
    from schema.supplier import Supplier


@strawberry.enum
class PriceListStatus(Enum):
    PROCESSING = "PROCESSING"
    ACTIVE = "ACTIVE"
    SUPERSEDED = "SUPERSEDED"
    FAILED = "FAILED"
    ARCHIVED = "ARCHIVED"


@strawberry.type
class RowError:
    line: int
    column: str | None
    message: str
    raw: str | None


@strawberry.type
class Price:
    unit_price: Decimal
    currency: str
    unit_calc_price: Decimal | None
    buy_price: Decimal | None
    sale_price: Decimal | None
    stock: int | None
    price_date: date | None
    valid_from: datetime
    pk: strawberry.Private[int]
    material_id: strawberry.Private[int]
    supplier_id: strawberry.Private[int]
    price_list_id: strawberry.Private[int]
    calc_unit_code: strawberry.Private[str | None]
    prefetched: strawberry.Private[dict[str, Any]] = dataclasses.field(default_factory=dict)
    TYPE_NAMES: ClassVar[frozenset[str]] = frozenset({"Price"})
    RELATIONS: ClassVar[dict[str, Relation]] = {}

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Price:
        return cls(
            unit_price=row["unit_price"],
            currency=row["currency"],
            unit_calc_price=row["unit_calc_price"],
            buy_price=row["buy_price"],
            sale_price=row["sale_price"],
            stock=row["stock"],
            price_date=row["price_date"],
            valid_from=row["valid_from"],
            pk=row["id"],
            material_id=row["material_id"],
            supplier_id=row["supplier_id"],
            price_list_id=row["price_list_id"],
            calc_unit_code=row["calc_unit_code"],
        )

    @classmethod
    def summary(cls, row: Any) -> Price:
        """A price from a page's PRICE_SUMMARY_COLUMNS (backends.catalog): unit price, currency
        and supplier only. The page reads no more because its query asks no more of it
        (schema.query.read_plan); the other fields are None and never selected."""
        return cls(
            unit_price=row["unit_price"], currency=row["currency"], unit_calc_price=None, buy_price=None,
            sale_price=None, stock=None, price_date=None, valid_from=None,  # type: ignore[arg-type]
            pk=None, material_id=row["material_id"], supplier_id=row["supplier_id"],  # type: ignore[arg-type]
            price_list_id=None, calc_unit_code=None,  # type: ignore[arg-type]
        )

    @classmethod
    def from_rows(cls, rows: list[asyncpg.Record]) -> list[Price]:
        return [cls.from_row(r) for r in rows]

    @strawberry.field
    def material(self, info: strawberry.Info[Context, None]) -> Annotated[Material, strawberry.lazy("schema.material")]:
        return self.RELATIONS["material"].resolve(self, info.context)

    @strawberry.field
    def supplier(self, info: strawberry.Info[Context, None]) -> Annotated[Supplier, strawberry.lazy("schema.supplier")]:
        return self.RELATIONS["supplier"].resolve(self, info.context)

    @strawberry.field
    def price_list(self, info: strawberry.Info[Context, None]) -> PriceList:
        return self.RELATIONS["priceList"].resolve(self, info.context)

    @strawberry.field(description="Calculation unit, e.g. кг for a 50 kg bag.")
    def calc_unit(self, info: strawberry.Info[Context, None]) -> Unit | None:
        return self.RELATIONS["calcUnit"].resolve(self, info.context)


@strawberry.type
class PriceEdge(Edge):
    node: Price


@strawberry.type
class PriceConnection:
    edges: list[PriceEdge]
    page_info: PageInfo

    @classmethod
    async def from_page(cls, page: Page, info: strawberry.Info[Context, None]) -> PriceConnection:
        edges = await edges_of(PriceEdge, page, Price.from_row, info)
        return cls(edges=edges, page_info=PageInfo.of(page))


@strawberry.type
class PriceList(Node):
    id: strawberry.ID
    version: int
    status: PriceListStatus
    filename: str | None
    checksum: str
    uploaded_at: datetime
    effective_at: datetime
    row_count: int
    rejected_count: int
    archived_at: datetime | None = strawberry.field(
        description="When its prices moved to the archive (archivePriceLists); null while they are in prices.")
    pk: strawberry.Private[int]
    supplier_id: strawberry.Private[int]
    prefetched: strawberry.Private[dict[str, Any]] = dataclasses.field(default_factory=dict)
    TYPE_NAMES: ClassVar[frozenset[str]] = frozenset({"PriceList", "Node"})
    RELATIONS: ClassVar[dict[str, Relation]] = {}

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> PriceList:
        return cls(
            id=strawberry.ID(to_global_id("PriceList", row["id"])),
            version=row["version"],
            status=PriceListStatus(row["status"]),
            filename=row["filename"],
            checksum=row["checksum"],
            uploaded_at=row["uploaded_at"],
            effective_at=row["effective_at"],
            row_count=row["row_count"],
            rejected_count=row["rejected_count"],
            archived_at=row["archived_at"],
            pk=row["id"],
            supplier_id=row["supplier_id"],
        )

    @classmethod
    def from_optional_row(cls, row: asyncpg.Record | None) -> PriceList | None:
        return None if row is None else cls.from_row(row)

    @strawberry.field
    def supplier(self, info: strawberry.Info[Context, None]) -> Annotated[Supplier, strawberry.lazy("schema.supplier")]:
        return self.RELATIONS["supplier"].resolve(self, info.context)

    @strawberry.field
    async def rejected_rows(
        self, info: strawberry.Info[Context, None], first: int | None = 50, after: str | None = None
    ) -> list[RowError]:
        rows = await price_resolvers.rejected_rows(info.context, self.pk, first, after)
        return [RowError(line=r["line"], column=r["column"], message=r["message"], raw=r["raw"]) for r in rows]

    @strawberry.field
    async def prices(
        self, info: strawberry.Info[Context, None], first: int | None = 50, after: str | None = None
    ) -> PriceConnection:
        return await PriceConnection.from_page(
            await price_resolvers.price_list_prices_page(info.context, self.pk, first, after), info
        )


@strawberry.type
class PriceListEdge(Edge):
    node: PriceList


@strawberry.type
class PriceListConnection:
    edges: list[PriceListEdge]
    page_info: PageInfo

    @classmethod
    async def from_page(cls, page: Page, info: strawberry.Info[Context, None]) -> PriceListConnection:
        edges = await edges_of(PriceListEdge, page, PriceList.from_row, info)
        return cls(edges=edges, page_info=PageInfo.of(page))


def _material(row: asyncpg.Record | None) -> Any:
    from schema.material import Material

    if row is None:
        raise LookupError("price points at a material that no longer exists")
    return Material.from_row(row)


def _supplier(row: asyncpg.Record | None) -> Any:
    from schema.supplier import Supplier

    if row is None:
        raise LookupError("row points at a supplier that no longer exists")
    return Supplier.from_row(row)


def _price_list(row: asyncpg.Record | None) -> PriceList:
    if row is None:
        raise LookupError("price points at a price list that no longer exists")
    return PriceList.from_row(row)


Price.RELATIONS.update(
    material=Relation("material", lambda p: p.material_id, lambda c: c.loaders.material_by_id, _material),
    supplier=Relation("supplier", lambda p: p.supplier_id, lambda c: c.loaders.supplier_by_id, _supplier),
    priceList=Relation("priceList", lambda p: p.price_list_id, lambda c: c.loaders.price_list_by_id, _price_list),
    calcUnit=Relation("calcUnit", lambda p: p.calc_unit_code, lambda c: c.loaders.unit_by_code, Unit.from_optional_row),
)
PriceList.RELATIONS.update(
    supplier=Relation("supplier", lambda p: p.supplier_id, lambda c: c.loaders.supplier_by_id, _supplier),
)
