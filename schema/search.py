"""Search types of the contract: SearchMode, SearchHit, SearchEdge, SearchResult."""

from __future__ import annotations

from enum import Enum

import strawberry

from resolvers import search as search_resolvers
from resolvers.context import Context
from schema.material import Material
from schema.node import PageInfo
from schema.prefetch import prefetch, selections_under


@strawberry.enum
class SearchMode(Enum):
    HYBRID = "HYBRID"
    TEXT = "TEXT"
    VECTOR = "VECTOR"


@strawberry.type
class SearchHit:
    material: Material
    score: float = strawberry.field(description="Fused score, higher is better.")
    text_score: float | None = strawberry.field(description="Null when the text side did not return it.")
    vector_score: float | None = strawberry.field(description="Null when the vector side did not return it.")
    highlight: str | None = strawberry.field(
        description="The name, HTML-escaped, with <mark></mark> around matched terms.")


@strawberry.type
class SearchEdge:
    cursor: str
    node: SearchHit


@strawberry.type
class SearchResult:
    edges: list[SearchEdge]
    page_info: PageInfo
    mode: SearchMode
    degraded: bool = strawberry.field(
        description="True when a backend was unavailable and the results come from the other one alone.")
    took_ms: float
    corrected_query: str | None = strawberry.field(
        default=None,
        description="The query with misspelt words corrected (\"infared grill\" -> \"infrared grill\"), when "
                    "the text side searched for it as well as for the words as written; null when no word "
                    "needed correcting.")


async def hits_of(info: strawberry.Info[Context, None], hits: list[search_resolvers.ResolvedHit],
                  *path: str) -> list[SearchHit]:
    """SearchHit objects for resolved hits, with what the query selects under `material` prefetched."""
    out = [SearchHit(material=Material.from_row(h.row), score=h.score, text_score=h.text_score,
                     vector_score=h.vector_score, highlight=h.highlight) for h in hits]
    await prefetch(info.context, [h.material for h in out], selections_under(info, *path, "material"))
    return out


async def search_result(info: strawberry.Info[Context, None], page: search_resolvers.SearchPage) -> SearchResult:
    hits = await hits_of(info, page.hits, "edges", "node")
    edges = [SearchEdge(cursor=cursor, node=hit) for cursor, hit in zip(page.cursors, hits, strict=True)]
    return SearchResult(
        edges=edges,
        page_info=PageInfo(has_next_page=page.has_next_page, has_previous_page=page.has_previous_page,
                           start_cursor=page.cursors[0] if page.cursors else None,
                           end_cursor=page.cursors[-1] if page.cursors else None),
        mode=SearchMode(page.mode), degraded=page.degraded, took_ms=round(page.took_ms, 3),
        corrected_query=page.corrected_query,
    )
