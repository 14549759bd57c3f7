"""Price-list imports: a supplier's file becomes a new ACTIVE price-list version, atomically.

    stream-parse (PriceFile.staging_records(), in a worker thread, 10k-row chunks)
      -> per chunk, while the next one is parsed: COPY every row, valid or rejected, as text
         into a temporary staging table, and one statement converts it into import_resolved
         (numbers, dates, units, material matched by SKU or name + unit)
      -> a few set-based statements over the whole file: categories, materials created,
         the price-list row, prices, current prices, rejected rows, outbox events
      -> commit

All of it is one transaction: a file that fails anywhere (unreadable, no valid row, the
process killed, the connection lost) leaves nothing behind. Imports of one supplier are
serialised by an advisory lock; a file whose checksum the supplier already imported returns
that price list with `duplicate=True` and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import asyncpg

from backends.errors import BackendError
from backends.import_progress import ProgressPublisher
from backends.metrics import IMPORT_ROWS
from backends.outbox import lock_outbox
from backends.postgres import PostgresBackend
from backends.pricefile import (
    SQL_NUMBER,
    STAGING_FIELDS,
    PriceFile,
    PriceFileError,
    read_price_file,
    staging_record,
)

IMPORT_LOCK = 7_107_500_002  # pg_advisory_xact_lock(IMPORT_LOCK, supplier id)
BATCH_ROWS = 10_000  # rows parsed per trip to the worker thread, then copied and resolved as one chunk
# Per statement. The pool's default (30 s) suits requests; creating 500,000 materials for a
# 1M-row file takes longer than that, and a timeout would throw the whole import away.
STATEMENT_TIMEOUT_S = 1800.0
Progress = Callable[[int], None]
Started = Callable[[int, int], None]  # (price list id, version), as soon as the id is reserved


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


# Every cell is text: the parser's fast path passes common CSV cells through as they are, and
# the resolve statement converts them (SQL_NUMBER, ::date, ::integer) on the way to
# import_resolved, the table every later statement reads.
STAGING = """
CREATE TEMP TABLE import_rows (
    ok              boolean NOT NULL,
    line            integer NOT NULL,
    name            text,
    sku             text,
    category        text,
    unit            text,
    unit_price      text,
    currency        text,
    calc_unit       text,
    unit_calc_price text,
    buy_price       text,
    sale_price      text,
    stock           text,
    price_date      text,
    description     text,
    err_column      text,
    err_message     text,
    raw             text,
    name_key        text
) ON COMMIT DROP;
CREATE TEMP TABLE import_resolved (
    line            integer NOT NULL,
    ok              boolean NOT NULL,
    name            text,
    sku             text,
    category        text,
    description     text,
    unit_code       text,
    calc_unit_code  text,
    unit_price      numeric,
    currency        text,
    unit_calc_price numeric,
    buy_price       numeric,
    sale_price      numeric,
    stock           integer,
    price_date      date,
    name_key        text,
    err_column      text,
    err_message     text,
    raw             text,
    material_id     bigint,
    key             text
) ON COMMIT DROP;
CREATE TEMP TABLE import_created (
    id        bigint NOT NULL,
    key       text NOT NULL,
    sku       text,
    name      text NOT NULL,
    unit_code text NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE import_current (LIKE current_prices) ON COMMIT DROP;
"""
# The parser's fields, then the name key computed by the worker thread (name_key()).
STAGING_COLUMNS = (*STAGING_FIELDS, "name_key")
_NAME = STAGING_FIELDS.index("name")
# Whether CSV files take the parser's fast path (tests compare both ways).
FAST_CSV = True


async def _stage(conn: _Patient, price_file: PriceFile, progress: Progress | None) -> None:
    """Parses the file into import_resolved, a chunk at a time: a worker thread parses the next
    chunk while the server takes in and resolves the last one, so parsing and SQL overlap and at
    most two chunks of rows are in memory."""
    records: Iterator[tuple[Any, ...]] = (
        price_file.staging_records() if FAST_CSV else map(staging_record, price_file.rows()))

    def next_chunk() -> list[tuple[Any, ...]]:
        # The name key is computed here, on the worker thread, while the server is busy with the
        # last chunk: in SQL (a regular expression) it was the costliest part of resolving a row.
        return [(*record, name_key(record[_NAME]) if record[0] else None)
                for record in islice(records, BATCH_ROWS)]

    pending = asyncio.ensure_future(asyncio.to_thread(next_chunk))
    try:
        while chunk := await pending:
            pending = asyncio.ensure_future(asyncio.to_thread(next_chunk))
            rows = len(chunk)
            await conn.copy_records_to_table("import_rows", columns=STAGING_COLUMNS, records=chunk)
            del chunk  # only the chunk being parsed stays in memory
            await conn.execute(RESOLVE + "; TRUNCATE import_rows")
            if progress is not None:
                progress(rows)
    finally:
        # Never leave the worker thread reading a file the caller is about to close.
        with contextlib.suppress(BaseException):
            await pending


# material_name_key() of migrations/0003 in Python: btrim (spaces only), lower, ё -> е, each run
# of whitespace (the regular expression's \s: space, \t, \n, \v, \f, \r) -> one space. Python's
# lower() and PostgreSQL's (the database's ctype) agree on ASCII and on Russian letters; a name
# with any other character (Latin accents, other scripts, other Unicode spaces, control
# characters) gets None, and SQL computes its key.
_KEY_SPACES = re.compile(r"[ \t\n\v\f\r]+")
_KEY_UNSURE = re.compile("[^\x20-\x7e\t\n\v\f\r\u0401\u0410-\u044f\u0451«»№–—‘’“”„°×·…±²³]")


def name_key(name: str | None) -> str | None:
    """The name key of `name` as material_name_key() computes it, or None when unsure."""
    if name is None or _KEY_UNSURE.search(name) is not None:
        return None
    key = name.strip(" ").lower().replace("ё", "е")
    # Most names have single spaces only: the substitution (half the time) only when needed.
    if "  " in key or "\t" in key or "\n" in key or "\r" in key or "\v" in key or "\f" in key:
        return _KEY_SPACES.sub(" ", key)
    return key


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
    started: Started | None = None,
    phase_done: Callable[[str], None] | None = None,
) -> ImportResult:
    """Imports one price-list file for a supplier; see the module docstring. Progress is also
    published for `importProgress` subscribers (backends.import_progress). `phase_done(name)` is
    called as each step of ImportResult.phases ends (benchmarks read CPU counters there).

    Raises PriceFileError (the file cannot be used; nothing stored) or SupplierNotFound.
    """
    started_at = time.perf_counter()

    def duplicate(row: asyncpg.Record) -> ImportResult:
        return ImportResult(row["id"], row["version"], True, row["row_count"], row["rejected_count"], 0, 0,
                            round(time.perf_counter() - started_at, 3))

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
    publisher = ProgressPublisher(pg)

    def rows_done(count: int) -> None:
        publisher.rows(count)
        if progress is not None:
            progress(count)

    def reserved(price_list_id: int, version: int) -> None:
        # The file's checksum when its bytes could be read ahead, else known only at the end.
        publisher.started(price_list_id, supplier_id, version, price_file.filename, checksum or "", effective, None)
        if started is not None:
            started(price_list_id, version)

    try:
        async with pg.transaction() as conn:
            result = await _import(_Patient(conn), supplier_id, price_file, effective, rows_done, reserved, started_at,
                                      phase_done)
        # Counted once committed: rolled-back rows were never imported.
        IMPORT_ROWS.labels("stored").inc(result.row_count)
        IMPORT_ROWS.labels("rejected").inc(result.rejected_count)
    except _Duplicate as dup:
        await publisher.finish(failed=f"the same file was imported before as price list {dup.row['id']}")
        return duplicate(dup.row)
    except BaseException as exc:
        await asyncio.shield(publisher.finish(failed=str(exc) or type(exc).__name__))
        raise
    finally:
        price_file.close()
    await publisher.finish()  # after the commit: a subscriber told "done" can read the list
    return result


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
    progress: Progress | None, reserved: Started, started: float, phase_done: Callable[[str], None] | None,
) -> ImportResult:
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", IMPORT_LOCK % 2**31, supplier_id)
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM suppliers WHERE id = $1)", supplier_id):
        raise SupplierNotFound(f"supplier {supplier_id} does not exist")
    # The list's id and version are fixed now (the supplier's lock is held to commit), so its
    # progress can name it while the rows are still being read (importProgress).
    list_id = await conn.fetchval("SELECT nextval(pg_get_serial_sequence('price_lists', 'id'))")
    version = await conn.fetchval("SELECT coalesce(max(version), 0) + 1 FROM price_lists WHERE supplier_id = $1",
                                  supplier_id)
    reserved(list_id, version)
    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 3)
        mark = now
        if phase_done is not None:
            phase_done(name)

    # Sorts and hashes of a whole file stay in memory; the plans are simple enough that JIT
    # compilation only adds its own time.
    # Merge joins are off: every join of the import is of a whole staging table with another
    # (or a catalog table), where the planner, without statistics on temporary tables, chose to
    # sort both sides by their text keys; a hash join takes them as they are.
    await conn.execute("SET LOCAL work_mem = '64MB'; SET LOCAL jit = off; SET LOCAL enable_mergejoin = off;" + STAGING)
    await _stage(conn, price_file, progress)
    phase("parse+copy+resolve")

    existing = await conn.fetchrow(
        "SELECT id, version, row_count, rejected_count FROM price_lists WHERE supplier_id = $1 AND checksum = $2",
        supplier_id, price_file.checksum)
    if existing is not None:
        raise _Duplicate(existing)  # rolls the staging back: the second import changes nothing

    counts = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE ok) AS valid, count(*) FILTER (WHERE NOT ok) AS rejected FROM import_resolved")
    valid, rejected = counts["valid"], counts["rejected"]
    if valid == 0:
        first = await conn.fetchrow("SELECT line, err_message FROM import_resolved ORDER BY line LIMIT 1")
        detail = f" (first: line {first['line']}: {first['err_message']})" if first else ""
        raise PriceFileError(f"no valid row: all rows were rejected{detail}")
    await _resolve_categories(conn)
    phase("categories")
    created = await _create_materials(conn)
    phase("materials")

    await conn.execute(
        "UPDATE price_lists SET status = 'SUPERSEDED', superseded_at = $2 WHERE supplier_id = $1 AND status = 'ACTIVE'",
        supplier_id, effective)
    price_list = await conn.fetchrow(
        "INSERT INTO price_lists (id, supplier_id, version, status, filename, checksum, effective_at, row_count, "
        "rejected_count) OVERRIDING SYSTEM VALUE VALUES ($7, $1, $8, 'ACTIVE', $2, $3, $4, $5, $6) RETURNING id, version",
        supplier_id, price_file.filename, price_file.checksum, effective, valid, rejected, list_id, version)

    await conn.execute("SELECT ensure_price_partitions($1, $1)", effective)
    # Every row goes to the history; the last row of a material in the file is its current price.
    await conn.execute(
        """
        WITH inserted AS (
            INSERT INTO prices (material_id, supplier_id, price_list_id, unit_price, currency, calc_unit_code,
                                unit_calc_price, buy_price, sale_price, stock, price_date, valid_from)
            SELECT coalesce(r.material_id, c.id), $1, $2, r.unit_price, r.currency, r.calc_unit_code,
                   r.unit_calc_price, r.buy_price, r.sale_price, r.stock, r.price_date, $3
            FROM import_resolved r LEFT JOIN import_created c ON r.material_id IS NULL AND c.key = r.key
            WHERE r.ok ORDER BY r.line
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
        "SELECT $1, line, err_column, err_message, raw FROM import_resolved WHERE NOT ok ON CONFLICT DO NOTHING",
        list_id)

    # Events last: the outbox lock is then held only from here to commit. New materials
    # first, so a consumer never sees a price of a material it has not heard of.
    await lock_outbox(conn)
    # Typed rows of the outbox (migrations/0013): the view `outbox` gives them their payload.
    created_events = await conn.execute(
        "INSERT INTO material_created_events (material_id, sku, name, unit_code) "
        "SELECT id, sku, name, unit_code FROM import_created ORDER BY id")
    # A price changed when the supplier's current price of a material differs from the new
    # one; a material the new list no longer carries changes to null. Typed rows of the
    # outbox (migrations/0011): the view `outbox` gives them the jsonb payload consumers read.
    price_events = await conn.execute(
        """
        INSERT INTO price_change_events (material_id, supplier_id, price_list_id, currency, old_unit_price,
                                         category_path, price_id, unit_price, calc_unit_code, unit_calc_price,
                                         buy_price, sale_price, stock, price_date, valid_from)
        -- What subscriptions filter on and answer with (backends.price_events), so fanning an
        -- event out needs no query: the category's path (itself and its ancestors) at the time
        -- of the change, and the new price row (none when the new list no longer carries it).
        SELECT coalesce(n.material_id, o.material_id), $1, $2, coalesce(n.currency, o.currency), o.unit_price,
               c.path, n.price_id, n.unit_price, n.calc_unit_code, n.unit_calc_price,
               n.buy_price, n.sale_price, n.stock, n.price_date, n.valid_from
        FROM import_current n
        FULL JOIN (SELECT * FROM current_prices WHERE supplier_id = $1) o ON o.material_id = n.material_id
        LEFT JOIN materials m ON m.id = coalesce(n.material_id, o.material_id)
        LEFT JOIN categories c ON c.id = m.category_id
        WHERE o.unit_price IS DISTINCT FROM n.unit_price OR o.currency IS DISTINCT FROM n.currency
        ORDER BY 1
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
    return ImportResult(list_id, price_list["version"], False, valid, rejected, created, events,
                        round(time.perf_counter() - started, 3), phases)


def _number(column: str) -> str:
    return SQL_NUMBER.format(column)


# One pass over a chunk of staging rows: cells converted to their types, units through the alias
# table (м3, куб.м, m3 -> м³; a row whose unit is unknown is rejected), materials matched by SKU,
# else by normalised name + unit (the oldest live one). Rows left without a material get the key
# of the material they will create (one per SKU, or per name + unit).
RESOLVE = f"""
INSERT INTO import_resolved
SELECT line, ok, name, sku, category, description, unit_code, calc_unit_code, unit_price, currency,
       unit_calc_price, buy_price, sale_price, stock, price_date, name_key, err_column, err_message, raw,
       material_id,
       CASE WHEN ok AND material_id IS NULL THEN
           CASE WHEN sku IS NOT NULL THEN 'sku:' || sku ELSE 'name:' || name_key || '|' || unit_code END
       END
FROM (
    SELECT *, CASE WHEN ok THEN coalesce(sku_material_id, (
               SELECT m.id FROM materials m
               WHERE m.deleted_at IS NULL AND m.name_key = n.name_key AND m.unit_code = n.unit_code
               ORDER BY m.id LIMIT 1))
           END AS material_id
    FROM (
        -- Only a row that no SKU matched needs its name key: the worker thread's (name_key()),
        -- else material_name_key() (a regular expression, ~5 us a row).
        SELECT *, CASE WHEN ok AND sku_material_id IS NULL THEN coalesce(py_name_key, material_name_key(name))
                  END AS name_key
        FROM (
            SELECT r.line, r.ok AND a.unit_code IS NOT NULL AS ok, r.name, r.sku, r.category, r.description,
                   r.name_key AS py_name_key,
                   a.unit_code, c.unit_code AS calc_unit_code, {_number("r.unit_price")} AS unit_price,
                   r.currency, {_number("r.unit_calc_price")} AS unit_calc_price,
                   {_number("r.buy_price")} AS buy_price, {_number("r.sale_price")} AS sale_price,
                   r.stock::integer AS stock, r.price_date::date AS price_date,
                   -- An index lookup per row with a SKU (a chunk is small next to the catalog).
                   CASE WHEN r.ok AND r.sku IS NOT NULL THEN (
                       SELECT m.id FROM materials m WHERE m.sku = r.sku AND m.deleted_at IS NULL)
                   END AS sku_material_id,
                   CASE WHEN r.ok AND a.unit_code IS NULL THEN
                       CASE WHEN r.unit IS NOT NULL THEN 'unit' WHEN r.calc_unit IS NOT NULL THEN 'calc_unit' END
                   ELSE r.err_column END AS err_column,
                   CASE WHEN r.ok AND a.unit_code IS NULL THEN CASE
                       WHEN coalesce(r.unit, r.calc_unit) IS NULL
                           THEN 'unit: missing (the row has neither unit nor calc_unit)'
                       WHEN r.unit IS NOT NULL THEN format('unit: unknown unit "%s"', r.unit)
                       ELSE format('calc_unit: unknown unit "%s"', r.calc_unit) END
                   ELSE r.err_message END AS err_message,
                   CASE WHEN r.ok AND a.unit_code IS NULL THEN
                       concat_ws(' | ', r.line, r.name, r.sku, r.unit, r.calc_unit, {_number("r.unit_price")})
                   ELSE r.raw END AS raw
            FROM import_rows r
            LEFT JOIN unit_aliases a ON r.ok AND a.alias = lower(btrim(coalesce(r.unit, r.calc_unit)))
            LEFT JOIN unit_aliases c ON r.ok AND c.alias = lower(btrim(r.calc_unit))
            OFFSET 0  -- fences: each lookup and the name key run once per row, not once per use
        ) t
        OFFSET 0
    ) n
    OFFSET 0
) u
"""


async def _resolve_categories(conn: _Patient) -> None:
    """`use_category` names reuse a category of that name anywhere in the tree (the oldest),
    else become new root categories."""
    await conn.execute(
        """
        WITH spelled AS (
            -- The few distinct spellings first (a hash aggregate), then the first of each name.
            SELECT category, min(line) AS line FROM import_resolved WHERE ok GROUP BY category
        ), wanted AS (
            SELECT DISTINCT ON (lower(btrim(category))) btrim(category) AS name
            FROM spelled WHERE btrim(coalesce(category, '')) <> ''
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
        """)


async def _create_materials(conn: _Patient) -> int:
    """Rows left without a material create one per key, with the first such row's name,
    description, category and unit; import_created maps each key to its new material.
    Returns how many were created."""
    status = await conn.execute(
        """
        WITH created AS (
            -- In key order (a sort of the new materials by text key): the name indexes then take
            -- their entries in order. In file order, creating 900k materials cost 20% more CPU
            -- (random places in indexes larger than the buffer cache).
            INSERT INTO materials (sku, name, description, category_id, unit_code)
            SELECT DISTINCT ON (r.key) r.sku, btrim(r.name), r.description, c.id, r.unit_code
            FROM import_resolved r
            LEFT JOIN (SELECT DISTINCT ON (lower(name)) id, lower(name) AS lname
                       FROM categories ORDER BY lower(name), id) c ON c.lname = lower(btrim(r.category))
            WHERE r.key IS NOT NULL
            ORDER BY r.key, r.line
            RETURNING id, sku, name, name_key, unit_code
        )
        INSERT INTO import_created (id, key, sku, name, unit_code)
        SELECT id, CASE WHEN sku IS NOT NULL THEN 'sku:' || sku ELSE 'name:' || name_key || '|' || unit_code END,
               sku, name, unit_code
        FROM created
        """)
    return int(status.split()[-1])
