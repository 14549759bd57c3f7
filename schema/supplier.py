"""Suppliers and their connection type."""

from __future__ import annotations

import asyncpg
import strawberry

from resolvers import prices as price_resolvers
from resolvers.context import Context
from resolvers.ids import to_global_id
from resolvers.pagination import Page
from schema.node import Edge, Node, PageInfo, edges_of
from schema.price import PriceListConnection


@strawberry.type
class Supplier(Node):
    id: strawberry.ID
    name: str
    pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Supplier:
        return cls(id=strawberry.ID(to_global_id("Supplier", row["id"])), name=row["name"], pk=row["id"])

    @strawberry.field
    async def price_lists(
        self, info: strawberry.Info[Context, None], first: int | None = 20, after: str | None = None
    ) -> PriceListConnection:
        return await PriceListConnection.from_page(
            await price_resolvers.supplier_price_lists_page(info.context, self.pk, first, after), info
        )


@strawberry.type
class SupplierEdge(Edge):
    node: Supplier


@strawberry.type
class SupplierConnection:
    edges: list[SupplierEdge]
    page_info: PageInfo

    @classmethod
    async def from_page(cls, page: Page, info: strawberry.Info[Context, None]) -> SupplierConnection:
        edges = await edges_of(SupplierEdge, page, Supplier.from_row, info)
        return cls(edges=edges, page_info=PageInfo.of(page))
