"""The Node interface and Relay page info."""

from __future__ import annotations

from typing import Any

import strawberry

from resolvers.pagination import Page
from schema.prefetch import prefetch_nodes


@strawberry.interface
class Node:
    id: strawberry.ID


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None

    @classmethod
    def of(cls, page: Page) -> PageInfo:
        return cls(
            has_next_page=page.has_next_page,
            has_previous_page=page.has_previous_page,
            start_cursor=page.start_cursor,
            end_cursor=page.end_cursor,
        )


@strawberry.type
class Edge:
    """Base of the connection edges: the cursor is encoded only when selected."""

    page: strawberry.Private[Page]
    index: strawberry.Private[int]

    @strawberry.field
    def cursor(self) -> str:
        return self.page.cursor(self.index)


async def edges_of(edge_type: Any, page: Page, wrap: Any, info: Any) -> list[Any]:
    """The page's rows as `edge_type` edges around `wrap(row)` nodes, with the relations the
    query selects under `edges.node` already loaded (schema.prefetch)."""
    return await edges_around(edge_type, page, [wrap(row) for row in page.rows], info)


async def edges_around(edge_type: Any, page: Page, nodes: list[Any], info: Any) -> list[Any]:
    """The page's `nodes` (one per row, in order) as `edge_type` edges, prefetched likewise."""
    edges = [edge_type(page=page, index=i, node=node) for i, node in enumerate(nodes)]
    await prefetch_nodes(info, nodes)
    return edges
