"""The ceiling: a minimal Starlette + asyncpg app answering W1/W2 with hand-written SQL.

It returns the same JSON as the GraphQL API (``{"data": {...}}``, same field names and
order, Relay global ids, Decimals as strings, DateTimes in ISO 8601) with one SQL round
trip per request, serialised with orjson. It is what "Python, no GraphQL" can do on this
machine, so the API's throughput is reported as a fraction of it.

    DATABASE_URL=postgresql://... uvicorn ceiling_app:create_app --factory --app-dir bench --workers 2

Endpoints (variables as in the GraphQL documents; POST JSON ``{"id": ...}``, the same
wrapped in ``{"variables": {...}}``, or GET ``?id=...``):

    POST /w1  {"id": "<Material global id>"}
    POST /w2  {"cat": "<Category global id>"}
    POST /w2-naive  the same with the naive subtree SQL (see W2_NAIVE_SQL)

Each response carries ``X-SQL-Round-Trips`` (counted where the statements are sent).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# W1: the material, its category and its 5 latest prices with their supplier: one statement.
W1_SQL = """
SELECT m.id, m.sku, m.name, m.category_id, c.name AS category_name,
       h.unit_price::text AS unit_price, h.currency, h.valid_from, s.name AS supplier_name
FROM materials m
LEFT JOIN categories c ON c.id = m.category_id
LEFT JOIN LATERAL (
    SELECT p.id, p.unit_price, p.currency, p.valid_from, p.supplier_id
    FROM prices p WHERE p.material_id = m.id
    ORDER BY p.valid_from DESC, p.id DESC LIMIT 5
) h ON true
LEFT JOIN suppliers s ON s.id = h.supplier_id
WHERE m.id = $1 AND m.deleted_at IS NULL
ORDER BY h.valid_from DESC, h.id DESC
"""

# W2: the first 50 live materials of a category subtree by (name, id), each with unit,
# category and current prices (cheapest first) with supplier: one statement, one row per
# (material, current price). The page is a merge of the first 50 of each category of the
# subtree (index on category_id, name, id), the fastest form found for large subtrees; the
# API reads its page the same way, so both sides do the same index work.
W2_SQL = """
SELECT m.id, m.sku, m.name, m.unit_code, u.name AS unit_name, m.category_id, c.name AS category_name,
       cp.unit_price::text AS unit_price, cp.currency, cp.supplier_id, s.name AS supplier_name
FROM (
    SELECT q.* FROM categories sc CROSS JOIN LATERAL (
        SELECT m.id, m.sku, m.name, m.unit_code, m.category_id FROM materials m
        WHERE m.deleted_at IS NULL AND m.category_id = sc.id
        ORDER BY m.name, m.id LIMIT 50
    ) q
    WHERE sc.path @> ARRAY[$1::bigint]
    ORDER BY q.name, q.id LIMIT 50
) m
JOIN units u ON u.code = m.unit_code
LEFT JOIN categories c ON c.id = m.category_id
LEFT JOIN current_prices cp ON cp.material_id = m.id
LEFT JOIN suppliers s ON s.id = cp.supplier_id
ORDER BY m.name, m.id, cp.unit_price, cp.supplier_id
"""

# W2 as most hand-written code would first put it: the subtree's materials in name order.
# PostgreSQL walks the name index (or sorts the subtree) until it has a page: ~13 ms for a
# subtree of 48k materials at 100k, where the merge above takes under 1 ms. Served at
# /w2-naive so the bench can show both ceilings.
W2_NAIVE_SQL = W2_SQL.replace(
    """    SELECT q.* FROM categories sc CROSS JOIN LATERAL (
        SELECT m.id, m.sku, m.name, m.unit_code, m.category_id FROM materials m
        WHERE m.deleted_at IS NULL AND m.category_id = sc.id
        ORDER BY m.name, m.id LIMIT 50
    ) q
    WHERE sc.path @> ARRAY[$1::bigint]
    ORDER BY q.name, q.id LIMIT 50""",
    """    SELECT m.id, m.sku, m.name, m.unit_code, m.category_id FROM materials m
    WHERE m.deleted_at IS NULL
      AND m.category_id IN (SELECT c.id FROM categories c WHERE c.path @> ARRAY[$1::bigint])
    ORDER BY m.name, m.id LIMIT 50""",
)
assert W2_NAIVE_SQL != W2_SQL

ROUND_TRIPS = {"w1": 1, "w2": 1}
_JSON = "application/json"


async def _no_reset(_: asyncpg.Connection) -> None:
    """Released connections keep no session state here (as backends.postgres's pool)."""


def global_id(type_name: str, pk: int) -> str:
    """Relay global id, exactly as the API writes it: base64("Type:pk")."""
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode("ascii")


def parse_global_id(value: Any, expected: str) -> int | None:
    """The primary key of a global id of type `expected`, else None."""
    if not isinstance(value, str):
        return None
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return None
    type_name, _, pk = raw.partition(":")
    return int(pk) if type_name == expected and pk.isdigit() else None


def _category(category_id: int | None, name: str | None) -> dict[str, Any] | None:
    return None if category_id is None else {"id": global_id("Category", category_id), "name": name}


def render_w1(rows: list[asyncpg.Record]) -> bytes:
    """`{"data": {"material": ...}}` from the W1 rows (none: the material is null)."""
    if not rows:
        return orjson.dumps({"data": {"material": None}})
    first = rows[0]
    edges = [
        {"node": {"unitPrice": r[5], "currency": r[6], "validFrom": r[7], "supplier": {"name": r[8]}}}
        for r in rows
        if r[5] is not None
    ]
    material = {
        "id": global_id("Material", first[0]),
        "sku": first[1],
        "name": first[2],
        "category": _category(first[3], first[4]),
        "priceHistory": {"edges": edges},
    }
    return orjson.dumps({"data": {"material": material}})


def render_w2(rows: list[asyncpg.Record]) -> bytes:
    """`{"data": {"materials": {"edges": [...]}}}` from the W2 rows, grouped per material."""
    edges: list[dict[str, Any]] = []
    prices: list[dict[str, Any]] = []
    last: int | None = None
    for r in rows:
        if r[0] != last:
            last = r[0]
            prices = []
            edges.append({"node": {
                "id": global_id("Material", r[0]),
                "sku": r[1],
                "name": r[2],
                "unit": {"code": r[3], "name": r[4]},
                "category": _category(r[5], r[6]),
                "currentPrices": prices,
            }})
        if r[7] is not None:
            prices.append({"unitPrice": r[7], "currency": r[8],
                           "supplier": {"id": global_id("Supplier", r[9]), "name": r[10]}})
    return orjson.dumps({"data": {"materials": {"edges": edges}}})


async def _variables(request: Request) -> Mapping[str, Any]:
    if request.method == "GET":
        return request.query_params
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return {}
    if isinstance(body, dict) and isinstance(body.get("variables"), dict):
        return body["variables"]
    return body if isinstance(body, dict) else {}


def _bad_request(message: str) -> Response:
    return Response(orjson.dumps({"errors": [{"message": message}]}), status_code=400, media_type=_JSON)


def _ok(body: bytes, round_trips: int) -> Response:
    return Response(body, media_type=_JSON, headers={"x-sql-round-trips": str(round_trips)})


def create_app() -> Starlette:
    """The ceiling app; DATABASE_URL, PG_POOL_MIN and PG_POOL_MAX as for the API."""
    dsn = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/bench_catalog"
    min_size = int(os.environ.get("PG_POOL_MIN") or 1)
    max_size = int(os.environ.get("PG_POOL_MAX") or 10)
    # CEILING_POOL_RESET=default: asyncpg's own release (a reset query per request), as a
    # minimal endpoint written with the pool's defaults has it.
    reset = None if os.environ.get("CEILING_POOL_RESET") == "default" else _no_reset
    state: dict[str, asyncpg.Pool] = {}

    async def w1(request: Request) -> Response:
        pk = parse_global_id((await _variables(request)).get("id"), "Material")
        if pk is None:
            return _bad_request("variable id: not a Material ID")
        rows = await state["pool"].fetch(W1_SQL, pk)
        return _ok(render_w1(rows), ROUND_TRIPS["w1"])

    async def w2(request: Request) -> Response:
        pk = parse_global_id((await _variables(request)).get("cat"), "Category")
        if pk is None:
            return _bad_request("variable cat: not a Category ID")
        rows = await state["pool"].fetch(W2_NAIVE_SQL if request.url.path.endswith("-naive") else W2_SQL, pk)
        return _ok(render_w2(rows), ROUND_TRIPS["w2"])

    async def live(_: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Same pool settings as the API's PostgresBackend (no per-connection init needed),
        # including its release without asyncpg's reset query: by default each release sends
        # `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`, a second round
        # trip per request that the API does not make (until 2026-11-25 the ceiling paid it).
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=30.0,
                                         max_inactive_connection_lifetime=300.0, reset=reset)
        state["pool"] = pool
        try:
            yield
        finally:
            await pool.close()

    routes = [
        Route("/w1", w1, methods=["GET", "POST"]),
        Route("/w2", w2, methods=["GET", "POST"]),
        Route("/w2-naive", w2, methods=["GET", "POST"]),
        Route("/health/live", live),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
