"""Price-list imports: a supplier's file becomes a new ACTIVE price-list version, atomically.

    stream-parse (backends.pricefile, in a worker thread)
      -> COPY every row, valid or rejected, into a temporary staging table
      -> a few set-based statements: units, categories, materials (match or create),
         the price-list row, prices, current prices, rejected rows, outbox events
      -> commit

All of it is one transaction: a file that fails anywhere (unreadable, no valid row, the
process killed, the connection lost) leaves nothing behind. Imports of one supplier are
serialised by an advisory lock; a file whose checksum the supplier already imported returns
that price list with `duplicate=True` and changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import asyncpg

from backends.errors import BackendError
from backends.outbox import lock_outbox
from backends.postgres import PostgresBackend
from backends.pricefile import PriceFile, PriceFileError, PriceRow, RowError, read_price_file

IMPORT_LOCK = 7_107_500_002  # pg_advisory_xact_lock(IMPORT_LOCK, supplier id)
BATCH_ROWS = 5_000  # rows parsed per trip to the worker thread
# Per statement. The pool's default (30 s) suits requests; creating 500,000 materials for a
# 1M-row file takes longer than that, and a timeout would throw the whole import away.
STATEMENT_TIMEOUT_S = 1800.0
Progress = Callable[[int], None]


class SupplierNotFound(BackendError):
    """The supplier of an import does not exist."""


@dataclass(frozen=True)
class ImportResult:
    """What an import did (or, with duplicate=True, the earlier import of the same file)."""

    price_list_id: int
    version: int
    duplicate: bool
    row_count: int
    rejected_count: int
    materials_created: int
    events: int
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step, for benchmarks


STAGING = """
CREATE TEMP TABLE import_rows (
    ok              boolean NOT NULL,
    line            integer NOT NULL,
    name            text,
    sku             text,
    category        text,
    unit            text,
    unit_price      numeric,
    currency        text,
    calc_unit       text,
    unit_calc_price numeric,
    buy_price       numeric,
    sale_price      numeric,
    stock           integer,
    price_date      date,
    description     text,
    err_column      text,
    err_message     text,
    raw             text,
    unit_code       text,
    calc_unit_code  text,
    category_id     bigint,
    material_id     bigint,
    name_key        text
) ON COMMIT DROP;
CREATE TEMP TABLE import_current (LIKE current_prices) ON COMMIT DROP;
"""
STAGING_COLUMNS = (
    "ok", "line", "name", "sku", "category", "unit", "unit_price", "currency", "calc_unit", "unit_calc_price",
    "buy_price", "sale_price", "stock", "price_date", "description", "err_column", "err_message", "raw",
)


def _record(item: PriceRow | RowError) -> tuple[Any, ...]:
    if type(item) is RowError:
        return (False, item.line, None, None, None, None, None, None, None, None, None, None, None, None, None,
                item.column, item.message, item.raw)
    row: PriceRow = item  # type: ignore[assignment]
    return (True, row.line, row.name, row.sku, row.category, row.unit, row.unit_price, row.currency,
            row.calc_unit, row.unit_calc_price, row.buy_price, row.sale_price, row.stock, row.price_date,
            row.description, None, None, None)


async def _records(price_file: PriceFile, progress: Progress | None) -> AsyncIterator[tuple[Any, ...]]:
    """The file's rows as staging records; parsing runs in a worker thread, a batch at a time,
    so the event loop keeps serving and at most one batch of rows is in memory."""
    rows: Iterator[PriceRow | RowError] = price_file.rows()

    def next_batch() -> list[tuple[Any, ...]]:
        batch = []
        for item in rows:
            batch.append(_record(item))
            if len(batch) >= BATCH_ROWS:
                break
        return batch

    while batch := await asyncio.to_thread(next_batch):
        for record in batch:
            yield record
        if progress is not None:
            progress(len(batch))


class _Patient:
    """The import's connection, its statements allowed STATEMENT_TIMEOUT_S each."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> str:
        return await self._conn.execute(sql, *args, timeout=STATEMENT_TIMEOUT_S)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._conn.fetch(sql, *args, timeout=STATEMENT_TIMEOUT_S)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self._conn.fetchrow(sql, *args, timeout=STATEMENT_TIMEOUT_S)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._conn.fetchval(sql, *args, timeout=STATEMENT_TIMEOUT_S)

    async def copy_records_to_table(self, table: str, **kwargs: Any) -> str:
        return await self._conn.copy_records_to_table(table, timeout=STATEMENT_TIMEOUT_S, **kwargs)


class _Duplicate(Exception):
    def __init__(self, row: asyncpg.Record) -> None:
        self.row = row


async def import_price_list(
    pg: PostgresBackend,
    supplier_id: int,
    source: str | Path | BinaryIO,
    *,
    filename: str | None = None,
    effective_at: datetime | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Imports one price-list file for a supplier; see the module docstring.

    Raises PriceFileError (the file cannot be used; nothing stored) or SupplierNotFound.
    """
    started = time.perf_counter()

    def duplicate(row: asyncpg.Record) -> ImportResult:
        return ImportResult(row["id"], row["version"], True, row["row_count"], row["rejected_count"], 0, 0,
                            round(time.perf_counter() - started, 3))

    # A file already imported is recognised by its checksum before anything is parsed when
    # the bytes can be read twice (a path, an uploaded temporary file); the import itself
    # checks again under the supplier's lock.
    checksum = await asyncio.to_thread(_checksum_first, source)
    if checksum is not None:
        row = await pg.fetchrow(
            "SELECT id, version, row_count, rejected_count FROM price_lists WHERE supplier_id = $1 AND checksum = $2",
            supplier_id, checksum)
        if row is not None:
            return duplicate(row)
    price_file = await asyncio.to_thread(read_price_file, source, filename=filename)
    effective = effective_at or datetime.now(UTC)
    try:
        async with pg.transaction() as conn:
            return await _import(_Patient(conn), supplier_id, price_file, effective, progress, started)
    except _Duplicate as dup:
        return duplicate(dup.row)
    finally:
        price_file.close()


def _checksum_first(source: str | Path | BinaryIO) -> str | None:
    """sha256 of the file's bytes without consuming a stream (None if it cannot be rewound)."""
    digest = hashlib.sha256()
    if isinstance(source, str | Path):
        try:
            with open(source, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        except OSError:
            return None  # read_price_file reports it
        return digest.hexdigest()
    try:
        if not source.seekable():
            return None
        start = source.tell()
        while chunk := source.read(1 << 20):
            digest.update(chunk)
        source.seek(start)
    except (OSError, AttributeError, ValueError):
        return None
    return digest.hexdigest()


async def _import(
    conn: _Patient, supplier_id: int, price_file: PriceFile, effective: datetime,
    progress: Progress | None, started: float,
) -> ImportResult:
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", IMPORT_LOCK % 2**31, supplier_id)
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM suppliers WHERE id = $1)", supplier_id):
        raise SupplierNotFound(f"supplier {supplier_id} does not exist")
    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 3)
        mark = now

    await conn.execute(STAGING)
    await conn.copy_records_to_table("import_rows", columns=STAGING_COLUMNS, records=_records(price_file, progress))
    await conn.execute("ANALYZE import_rows")  # real row counts for the merge plans
    phase("parse+copy")

    existing = await conn.fetchrow(
        "SELECT id, version, row_count, rejected_count FROM price_lists WHERE supplier_id = $1 AND checksum = $2",
        supplier_id, price_file.checksum)
    if existing is not None:
        raise _Duplicate(existing)  # rolls the staging back: the second import changes nothing

    await _resolve_units(conn)
    phase("units")
    valid = await conn.fetchval("SELECT count(*) FROM import_rows WHERE ok")
    if valid == 0:
        first = await conn.fetchrow("SELECT line, err_message FROM import_rows ORDER BY line LIMIT 1")
        detail = f" (first: line {first['line']}: {first['err_message']})" if first else ""
        raise PriceFileError(f"no valid row: all rows were rejected{detail}")
    await _resolve_categories(conn)
    phase("categories")
    created = await _resolve_materials(conn)
    phase("materials")

    await conn.execute(
        "UPDATE price_lists SET status = 'SUPERSEDED', superseded_at = $2 WHERE supplier_id = $1 AND status = 'ACTIVE'",
        supplier_id, effective)
    rejected = await conn.fetchval("SELECT count(*) FROM import_rows WHERE NOT ok")
    price_list = await conn.fetchrow(
        "INSERT INTO price_lists (supplier_id, version, status, filename, checksum, effective_at, row_count, "
        "rejected_count) VALUES ($1, (SELECT coalesce(max(version), 0) + 1 FROM price_lists WHERE supplier_id = $1), "
        "'ACTIVE', $2, $3, $4, $5, $6) RETURNING id, version",
        supplier_id, price_file.filename, price_file.checksum, effective, valid, rejected)
    list_id = price_list["id"]

    await conn.execute("SELECT ensure_price_partitions($1, $1)", effective)
    # Every row goes to the history; the last row of a material in the file is its current price.
    await conn.execute(
        """
        WITH inserted AS (
            INSERT INTO prices (material_id, supplier_id, price_list_id, unit_price, currency, calc_unit_code,
                                unit_calc_price, buy_price, sale_price, stock, price_date, valid_from)
            SELECT material_id, $1, $2, unit_price, currency, calc_unit_code, unit_calc_price, buy_price,
                   sale_price, stock, price_date, $3
            FROM import_rows WHERE ok ORDER BY line
            RETURNING *
        )
        INSERT INTO import_current (material_id, supplier_id, price_id, price_list_id, unit_price, currency,
                                    calc_unit_code, unit_calc_price, buy_price, sale_price, stock, price_date, valid_from)
        SELECT DISTINCT ON (material_id) material_id, supplier_id, id, price_list_id, unit_price, currency,
               calc_unit_code, unit_calc_price, buy_price, sale_price, stock, price_date, valid_from
        FROM inserted ORDER BY material_id, id DESC
        """,
        supplier_id, list_id, effective)
    phase("prices")
    await conn.execute(
        "INSERT INTO price_list_rejected_rows (price_list_id, line, \"column\", message, raw) "
        "SELECT $1, line, err_column, err_message, raw FROM import_rows WHERE NOT ok ON CONFLICT DO NOTHING",
        list_id)

    # Events last: the outbox lock is then held only from here to commit. New materials
    # first, so a consumer never sees a price of a material it has not heard of.
    await lock_outbox(conn)
    created_events = await conn.execute(
        """
        INSERT INTO events (topic, entity_id, payload)
        SELECT 'material.created', m.id, jsonb_build_object('materialId', m.id, 'sku', m.sku, 'name', m.name,
                                                             'unit', m.unit_code, 'source', 'import')
        FROM materials m WHERE m.id = ANY($1::bigint[]) ORDER BY m.id
        """,
        created)
    # A price changed when the supplier's current price of a material differs from the new
    # one; a material the new list no longer carries changes to null.
    price_events = await conn.execute(
        """
        INSERT INTO events (topic, entity_id, payload)
        SELECT 'price.changed', coalesce(n.material_id, o.material_id), jsonb_build_object(
                   'materialId', coalesce(n.material_id, o.material_id), 'supplierId', $1::bigint,
                   'priceListId', $2::bigint, 'currency', coalesce(n.currency, o.currency),
                   'oldUnitPrice', o.unit_price::text, 'newUnitPrice', n.unit_price::text)
        FROM import_current n
        FULL JOIN (SELECT * FROM current_prices WHERE supplier_id = $1) o ON o.material_id = n.material_id
        WHERE o.unit_price IS DISTINCT FROM n.unit_price OR o.currency IS DISTINCT FROM n.currency
        ORDER BY 2
        """,
        supplier_id, list_id)
    # The list itself: its supplier's current prices all point at it now, even the unchanged ones.
    await conn.execute(
        "INSERT INTO events (topic, entity_id, payload) VALUES ('price_list.imported', $2, "
        "jsonb_build_object('priceListId', $2::bigint, 'supplierId', $1::bigint, 'version', $3::int))",
        supplier_id, list_id, price_list["version"])
    events = int(created_events.split()[-1]) + int(price_events.split()[-1])
    phase("events")
    await conn.execute("DELETE FROM current_prices WHERE supplier_id = $1", supplier_id)
    await conn.execute("INSERT INTO current_prices SELECT * FROM import_current")
    phase("current")
    return ImportResult(list_id, price_list["version"], False, valid, rejected, len(created), events,
                        round(time.perf_counter() - started, 3), phases)


async def _resolve_units(conn: _Patient) -> None:
    """Units through the alias table (м3, куб.м, m3 -> м³); a row whose unit is unknown is rejected."""
    await conn.execute(
        """
        UPDATE import_rows r SET unit_code = a.unit_code, name_key = material_name_key(r.name)
        FROM unit_aliases a WHERE r.ok AND a.alias = lower(btrim(coalesce(r.unit, r.calc_unit)));
        UPDATE import_rows r SET calc_unit_code = a.unit_code
        FROM unit_aliases a WHERE r.ok AND a.alias = lower(btrim(r.calc_unit));
        UPDATE import_rows SET ok = false,
            err_column = CASE WHEN unit IS NOT NULL THEN 'unit' WHEN calc_unit IS NOT NULL THEN 'calc_unit' END,
            err_message = CASE
                WHEN coalesce(unit, calc_unit) IS NULL THEN 'unit: missing (the row has neither unit nor calc_unit)'
                WHEN unit IS NOT NULL THEN format('unit: unknown unit "%s"', unit)
                ELSE format('calc_unit: unknown unit "%s"', calc_unit) END,
            raw = concat_ws(' | ', line, name, sku, unit, calc_unit, unit_price)
        WHERE ok AND unit_code IS NULL;
        """)


async def _resolve_categories(conn: _Patient) -> None:
    """`use_category` names reuse a category of that name anywhere in the tree (the oldest),
    else become new root categories."""
    await conn.execute(
        """
        WITH wanted AS (
            SELECT DISTINCT ON (lower(btrim(category))) btrim(category) AS name
            FROM import_rows WHERE ok AND btrim(coalesce(category, '')) <> ''
            ORDER BY lower(btrim(category)), line
        ), added AS (
            INSERT INTO categories (name)
            SELECT w.name FROM wanted w
            WHERE NOT EXISTS (SELECT 1 FROM categories c WHERE lower(c.name) = lower(w.name))
            ON CONFLICT DO NOTHING
            RETURNING id
        )
        SELECT count(*) FROM added;
        -- A separate statement: the UPDATE of a data-modifying CTE's statement cannot see the
        -- rows that CTE inserted (they all kept an empty path, so category filters missed them).
        UPDATE categories SET path = ARRAY[id] WHERE parent_id IS NULL AND path = '{}';
        UPDATE import_rows r SET category_id = c.id
        FROM (SELECT DISTINCT ON (lower(name)) id, lower(name) AS key FROM categories ORDER BY lower(name), id) c
        WHERE r.ok AND c.key = lower(btrim(r.category));
        """)


async def _resolve_materials(conn: _Patient) -> list[int]:
    """Rows find their material by SKU, else by normalised name + unit; the rest create
    materials (one per SKU, or per name + unit). Returns the ids created."""
    match = """
        UPDATE import_rows r SET material_id = m.id
        FROM materials m WHERE r.ok AND r.material_id IS NULL AND r.sku IS NOT NULL
          AND m.sku = r.sku AND m.deleted_at IS NULL;
        UPDATE import_rows r SET material_id = m.id
        FROM (
            SELECT DISTINCT ON (name_key, unit_code) id, name_key, unit_code
            FROM materials
            WHERE deleted_at IS NULL AND (name_key, unit_code) IN (
                SELECT name_key, unit_code FROM import_rows WHERE ok AND material_id IS NULL)
            ORDER BY name_key, unit_code, id
        ) m
        WHERE r.ok AND r.material_id IS NULL AND m.name_key = r.name_key AND m.unit_code = r.unit_code;
    """
    await conn.execute(match)
    created = await conn.fetch(
        """
        INSERT INTO materials (sku, name, description, category_id, unit_code)
        SELECT DISTINCT ON (key) sku, btrim(name), description, category_id, unit_code
        FROM (
            SELECT *, CASE WHEN sku IS NOT NULL THEN 'sku:' || sku
                           ELSE 'name:' || name_key || '|' || unit_code END AS key
            FROM import_rows WHERE ok AND material_id IS NULL
        ) r
        ORDER BY key, line
        RETURNING id
        """)
    if created:
        await conn.execute(match)
    return [r["id"] for r in created]
