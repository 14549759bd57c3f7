"""Search resolvers: arguments checked, the search service asked, hits turned into material rows.

Search pages are positions in the fused list (which is recomputed for each page, so pages are
consistent while the catalog does not change). A cursor carries its position and a short hash
of the query, mode and filter it belongs to: a cursor from another search is refused.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from graphql import GraphQLError

from backends.catalog import MaterialFilterSpec
from backends.embedder import normalise_query, stable_key
from backends.search import MAX_QUERY_LENGTH, Hit, SearchService, SearchUnavailable, highlight, query_terms
from resolvers.catalog import check_unit_filter, filter_spec
from resolvers.context import Context
from resolvers.errors import InvalidArgument


class Unavailable(GraphQLError):
    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": "UNAVAILABLE"})


@dataclass(frozen=True)
class ResolvedHit:
    row: asyncpg.Record
    score: float
    text_score: float | None
    vector_score: float | None
    highlight: str | None


@dataclass(frozen=True)
class SearchPage:
    hits: list[ResolvedHit]
    cursors: list[str]
    has_next_page: bool
    has_previous_page: bool
    mode: str
    degraded: bool
    took_ms: float
    corrected_query: str | None = None


def service(ctx: Context) -> SearchService:
    if ctx.search is None:
        raise Unavailable("search is not configured on this server")
    if ctx.cache is not None:
        ctx.cache.not_cacheable()  # search follows its indexes, which no tag describes
    return ctx.search


def _checked_query(query: str, field: str) -> str:
    if len(query) > MAX_QUERY_LENGTH:
        raise InvalidArgument([field], f"must be at most {MAX_QUERY_LENGTH} characters (got {len(query)})")
    if not normalise_query(query):
        raise InvalidArgument([field], "must contain something to search for")
    return query


def _checked_first(first: int | None, cap: int, field: str = "first") -> int:
    size = 20 if first is None else first
    if size < 0:
        raise InvalidArgument([field], f"must not be negative (got {size})")
    if size > cap:
        raise InvalidArgument([field], f"must be at most {cap} (got {size})")
    return size


def _search_key(query: str, mode: str, spec: MaterialFilterSpec) -> str:
    return stable_key(normalise_query(query), mode, repr(spec))[:12]


def _cursor(key: str, position: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(["search", key, position])).decode("ascii")


def _position(cursor: str, key: str) -> int:
    try:
        kind, cursor_key, position = orjson.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        if kind != "search" or not isinstance(position, int) or position < 0:
            raise ValueError(cursor)
    except (binascii.Error, ValueError, TypeError, UnicodeError, orjson.JSONDecodeError):
        raise InvalidArgument(["after"], f'"{cursor}" is not a valid search cursor') from None
    if cursor_key != key:
        raise InvalidArgument(["after"], "the cursor belongs to another search (query, mode or filter differ)")
    return position


async def resolve_hits(ctx: Context, hits: Sequence[Hit], terms: Sequence[str]) -> list[ResolvedHit]:
    """Material rows for hits, in order, through the request's DataLoader; vanished rows dropped."""
    rows = await ctx.loaders.material_by_id.load_many([h.material_id for h in hits])
    return [
        ResolvedHit(row, h.score, h.text_score, h.vector_score, highlight(row["name"], terms))
        for h, row in zip(hits, rows, strict=True)
        if row is not None and not row["deleted"]
    ]


async def search(ctx: Context, query: str, flt: Any | None, mode: str, first: int | None,
                 after: str | None) -> SearchPage:
    engine = service(ctx)
    _checked_query(query, "query")
    size = _checked_first(first, ctx.max_page_size)
    spec = filter_spec(flt)
    await check_unit_filter(ctx, spec)
    key = _search_key(query, mode, spec)
    start = _position(after, key) + 1 if after is not None else 0
    depth = engine.tuning.depth
    if start + size > depth:
        raise InvalidArgument(["after"], f"search results go {depth} deep; refine the query to see others")
    try:
        # A query counts towards suggestions once, on its first page.
        outcome = await engine.search(query, spec, mode, count=after is None)
    except SearchUnavailable as exc:
        raise Unavailable(str(exc)) from None
    window = outcome.hits[start:start + size]
    resolved = await resolve_hits(ctx, window, outcome.terms)
    return SearchPage(
        hits=resolved,
        cursors=[_cursor(key, start + i) for i in range(len(resolved))],
        has_next_page=len(outcome.hits) > start + size,
        has_previous_page=start > 0,
        mode=mode, degraded=outcome.degraded, took_ms=outcome.took_ms, corrected_query=outcome.corrected,
    )


async def suggest(ctx: Context, prefix: str, first: int | None) -> list[str]:
    size = _checked_first(10 if first is None else first, 50)
    if len(prefix) > MAX_QUERY_LENGTH:
        raise InvalidArgument(["prefix"], f"must be at most {MAX_QUERY_LENGTH} characters (got {len(prefix)})")
    return await service(ctx).suggest(prefix, size)


async def match_material(ctx: Context, name: str, unit: str | None, first: int | None) -> list[ResolvedHit]:
    _checked_query(name, "name")
    size = _checked_first(5 if first is None else first, 50)
    try:
        outcome = await service(ctx).match_material(name, unit, size)
    except SearchUnavailable as exc:
        raise Unavailable(str(exc)) from None
    return await resolve_hits(ctx, outcome.hits, query_terms(name))


async def similar(ctx: Context, material_id: int, first: int | None) -> list[ResolvedHit]:
    size = _checked_first(10 if first is None else first, 50)
    try:
        hits = await service(ctx).similar(material_id, size)
    except SearchUnavailable as exc:
        raise Unavailable(str(exc)) from None
    return await resolve_hits(ctx, hits, ())
