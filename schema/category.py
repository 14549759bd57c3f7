"""Categories: a tree, each with its materials."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import asyncpg
import strawberry

from resolvers import catalog as catalog_resolvers
from resolvers.context import Context
from resolvers.ids import to_global_id
from schema.node import Node
from schema.prefetch import Relation

if TYPE_CHECKING:
    from schema.material import MaterialConnection, MaterialFilter


@strawberry.type
class Category(Node):
    id: strawberry.ID
    name: str
    pk: strawberry.Private[int]
    parent_id: strawberry.Private[int | None]
    prefetched: strawberry.Private[dict[str, Any]] = dataclasses.field(default_factory=dict)
    TYPE_NAMES: ClassVar[frozenset[str]] = frozenset({"Category", "Node"})
    RELATIONS: ClassVar[dict[str, Relation]] = {}

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Category:
        return cls(id=strawberry.ID(to_global_id("Category", row["id"])), name=row["name"], pk=row["id"],
                   parent_id=row["parent_id"])

    @classmethod
    def from_optional_row(cls, row: asyncpg.Record | None) -> Category | None:
        return None if row is None else cls.from_row(row)

    @classmethod
    def from_rows(cls, rows: list[asyncpg.Record]) -> list[Category]:
        return [cls.from_row(r) for r in rows]

    @strawberry.field
    def parent(self, info: strawberry.Info[Context, None]) -> Category | None:
        return self.RELATIONS["parent"].resolve(self, info.context)

    @strawberry.field
    def children(self, info: strawberry.Info[Context, None]) -> list[Category]:
        return self.RELATIONS["children"].resolve(self, info.context)

    @strawberry.field
    async def materials(
        self,
        info: strawberry.Info[Context, None],
        first: int | None = 20,
        after: str | None = None,
        filter: Annotated[MaterialFilter, strawberry.lazy("schema.material")] | None = None,
    ) -> Annotated[MaterialConnection, strawberry.lazy("schema.material")]:
        from schema.material import MaterialConnection

        spec = catalog_resolvers.filter_spec(filter)
        await catalog_resolvers.check_unit_filter(info.context, spec)
        page, total = await catalog_resolvers.category_materials_page(info.context, self.pk, spec, first, after)
        return await MaterialConnection.from_page(page, total, info)


Category.RELATIONS.update(
    parent=Relation("parent", lambda c: c.parent_id, lambda c: c.loaders.category_by_id, Category.from_optional_row),
    children=Relation("children", lambda c: c.pk, lambda c: c.loaders.categories_by_parent, Category.from_rows),
)
