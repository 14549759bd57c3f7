"""Archiving price lists: SUPERSEDED lists older than a date become ARCHIVED and their price
rows leave `prices` for `prices_archive`, all in one transaction.

A monthly partition of prices that holds nothing but rows of archived lists is detached and
attached to prices_archive as it is (no row copied); the rows of lists that share their month
with live lists are moved with one INSERT ... SELECT over a DELETE ... RETURNING. The history
(view price_history) reads both tables, so nothing disappears from priceHistory; current
prices live in current_prices and are never touched. A second run finds nothing to do.

Locks, in order (the same order imports take them, so the two queue instead of deadlocking):
the partition-creation advisory lock, then SHARE on prices (imports wait; reads go on) while
the partitions are checked and rows moved, and last ACCESS EXCLUSIVE on prices for the
detaches, held only from there to commit. That last lock is asked for with `lock_timeout`:
when long reads hold prices, the month's rows are moved instead of blocking every reader
queued behind the DETACH.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from backends.outbox import record_events
from backends.postgres import PostgresBackend

log = logging.getLogger(__name__)

# The key ensure_price_partitions() takes (hashtext of its name): holding it first orders an
# archive run with imports and with any other archive run.
PARTITIONS_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('ensure_price_partitions'))"
STATEMENT_TIMEOUT_S = 1800.0  # moving a large month of rows is a long statement by design
ARCHIVE_PREFIX = "prices_archive_"
MONTH_PARTITION = re.compile(r"prices_\d{4}_\d{2}")  # what ensure_price_partitions() creates
PRICE_COLUMNS = (
    "id, material_id, supplier_id, price_list_id, unit_price, currency, calc_unit_code, unit_calc_price, "
    "buy_price, sale_price, stock, price_date, valid_from"
)


@dataclass
class ArchiveResult:
    """What one run archived: lists, price rows, and how the rows got there."""

    price_lists: int = 0
    prices: int = 0
    rows_moved: int = 0  # copied row by row (months shared with live lists)
    rows_attached: int = 0  # in partitions detached from prices and attached to the archive
    partitions_attached: list[str] = field(default_factory=list)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step, for logs and bench/


@dataclass
class _Partition:
    name: str
    bound: str  # "FOR VALUES FROM (...) TO (...)", as pg_get_expr spells it
    month: datetime  # a valid_from inside it
    last: datetime
    rows: int  # rows of the lists being archived
    only_archived: bool = False


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _DryRunDone(Exception):
    """Raised to roll the transaction of a dry run back, carrying what it would have done."""

    def __init__(self, result: ArchiveResult) -> None:
        self.result = result


async def archive_price_lists(
    pg: PostgresBackend, before: datetime, *, lock_timeout_s: float = 5.0, dry_run: bool = False
) -> ArchiveResult:
    """Archives the lists superseded before `before` (and any ARCHIVED list whose rows are
    still in prices, e.g. flipped by an older version); one transaction, all or nothing.

    A dry run finds and checks the same way, reports what would move and how (no month is
    then locked more than SHARE), and rolls back.
    """
    if before.tzinfo is None:
        raise ValueError("before needs a time zone")
    started = time.perf_counter()
    try:
        async with pg.transaction() as conn:
            result = await _archive(conn, before, lock_timeout_s, dry_run)
    except _DryRunDone as done:
        result = done.result
    result.seconds = round(time.perf_counter() - started, 3)
    log.info("%s %d price lists, %d prices (%d in attached months %s, %d moved) in %.2f s %s",
             "would archive" if dry_run else "archived", result.price_lists, result.prices, result.rows_attached,
             result.partitions_attached or "[]", result.rows_moved, result.seconds, result.phases)
    return result


async def _archive(conn: asyncpg.Connection, before: datetime, lock_timeout_s: float, dry_run: bool) -> ArchiveResult:
    t = STATEMENT_TIMEOUT_S
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        result.phases[name] = round(now - mark, 3)
        mark = now

    result = ArchiveResult()
    await conn.execute(PARTITIONS_LOCK_SQL, timeout=t)
    await conn.execute(
        "UPDATE price_lists SET status = 'ARCHIVED' WHERE status = 'SUPERSEDED' AND superseded_at < $1", before,
        timeout=t)
    lists = await conn.fetch(
        "SELECT id, supplier_id, version FROM price_lists WHERE status = 'ARCHIVED' AND archived_at IS NULL "
        "ORDER BY id", timeout=t)
    result.price_lists = len(lists)
    phase("lists")
    if not lists:
        return result
    ids = [r["id"] for r in lists]

    await conn.execute("LOCK TABLE prices IN SHARE MODE", timeout=t)
    phase("lock")
    per_list: dict[int, int] = defaultdict(int)
    partitions: dict[str, _Partition] = {}
    for r in await conn.fetch(
        # Grouped before the join: pg_get_expr() once per partition, not once per row (1.8 s -> 0.1 s).
        "SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound, g.price_list_id, g.n, g.first, g.last "
        "FROM (SELECT tableoid, price_list_id, count(*) AS n, min(valid_from) AS first, max(valid_from) AS last "
        "      FROM prices WHERE price_list_id = ANY($1::bigint[]) GROUP BY 1, 2) g "
        "JOIN pg_class c ON c.oid = g.tableoid", ids, timeout=t,
    ):
        per_list[r["price_list_id"]] += r["n"]
        part = partitions.setdefault(r["name"], _Partition(r["name"], r["bound"], r["first"], r["last"], 0))
        part.rows += r["n"]
        part.month, part.last = min(part.month, r["first"]), max(part.last, r["last"])
    result.prices = sum(per_list.values())
    months = sorted(partitions.values(), key=lambda part: part.month)  # oldest first, every run alike
    phase("find")

    # SHARE keeps imports out from here to commit: what these checks see stays true.
    for part in months:
        suffix = part.name.removeprefix("prices_")
        part.only_archived = (
            MONTH_PARTITION.fullmatch(part.name) is not None  # any other partition keeps its rows' home
            and await conn.fetchval("SELECT to_regclass($1) IS NULL", ARCHIVE_PREFIX + suffix, timeout=t)
            # Every row of the month is one of ours when it has no more rows than we found
            # there. A count, not a test of each row against the ids: 5 months of 83k rows took
            # 0.023 s so, 0.4 s with `<> ALL($1)` of 330 ids (linear in the ids: a parameter
            # array is not hashed) and 3.2 s as an anti-join on price_lists.
            and await conn.fetchval(f"SELECT count(*) FROM ONLY {_ident(part.name)}", timeout=t) == part.rows
        )

    if not dry_run:
        for part in months:
            if part.only_archived:
                await _validate_bounds(conn, part)
    phase("check")
    if dry_run:
        for part in months:
            if part.only_archived:
                result.partitions_attached.append(ARCHIVE_PREFIX + part.name.removeprefix("prices_"))
                result.rows_attached += part.rows
            else:
                result.rows_moved += part.rows
        raise _DryRunDone(result)
    # Row moves first, under SHARE only: readers are not held up however long they take.
    for part in months:
        if not part.only_archived:
            result.rows_moved += await _move_rows(conn, part, ids)
    phase("move")
    # Detaches last: each takes ACCESS EXCLUSIVE on prices, held until the commit just after.
    previous = await conn.fetchval("SELECT current_setting('lock_timeout')")
    await conn.execute("SELECT set_config('lock_timeout', $1, true)", f"{int(lock_timeout_s * 1000)}ms")
    busy = []
    for part in months:
        if not part.only_archived:
            continue
        try:
            async with conn.transaction():  # a savepoint: a refused lock undoes this month only
                await _attach_to_archive(conn, part)
            result.partitions_attached.append(ARCHIVE_PREFIX + part.name.removeprefix("prices_"))
            result.rows_attached += part.rows
        except asyncpg.LockNotAvailableError:
            log.warning("archive: %s is busy (lock_timeout %.1f s); moving its rows instead", part.name,
                        lock_timeout_s)
            busy.append(part)
    await conn.execute("SELECT set_config('lock_timeout', $1, true)", previous)
    for part in busy:
        result.rows_moved += await _move_rows(conn, part, ids)
    phase("detach+attach")

    await conn.execute("UPDATE price_lists SET archived_at = now() WHERE id = ANY($1::bigint[])", ids, timeout=t)
    await record_events(conn, [
        ("price_list.archived", r["id"],
         {"priceListId": r["id"], "supplierId": r["supplier_id"], "version": r["version"],
          "prices": per_list.get(r["id"], 0)})
        for r in lists
    ])
    phase("events")
    return result


async def _move_rows(conn: asyncpg.Connection, part: _Partition, ids: list[int]) -> int:
    """Moves the archived lists' rows of one partition into prices_archive: one statement."""
    await conn.execute("SELECT ensure_price_archive_partitions($1, $2)", part.month, part.last,
                       timeout=STATEMENT_TIMEOUT_S)
    status = await conn.execute(
        f"WITH moved AS (DELETE FROM ONLY {_ident(part.name)} WHERE price_list_id = ANY($1::bigint[]) "
        f"RETURNING {PRICE_COLUMNS}) INSERT INTO prices_archive ({PRICE_COLUMNS}) SELECT {PRICE_COLUMNS} FROM moved",
        ids, timeout=STATEMENT_TIMEOUT_S)
    return int(status.split()[-1])


async def _validate_bounds(conn: asyncpg.Connection, part: _Partition) -> None:
    """Validates the month's bounds CHECK if the migration left it NOT VALID (months older than
    it): a scan now, under SHARE UPDATE EXCLUSIVE that readers do not wait for, instead of
    ATTACH's scan later under the ACCESS EXCLUSIVE lock that the DETACH takes on prices."""
    constraint = part.name + "_bounds"
    valid = await conn.fetchval(
        "SELECT convalidated FROM pg_constraint WHERE conrelid = $1::regclass AND conname = $2", part.name, constraint,
        timeout=STATEMENT_TIMEOUT_S)
    if valid is False:
        await conn.execute(f"ALTER TABLE {_ident(part.name)} VALIDATE CONSTRAINT {_ident(constraint)}",
                           timeout=STATEMENT_TIMEOUT_S)


async def _attach_to_archive(conn: asyncpg.Connection, part: _Partition) -> None:
    """Detaches a month of prices and attaches it, renamed, to prices_archive; then creates the
    month again in prices so that a later price dated in it still has a home."""
    archived = ARCHIVE_PREFIX + part.name.removeprefix("prices_")
    t = STATEMENT_TIMEOUT_S
    await conn.execute(f"ALTER TABLE prices DETACH PARTITION {_ident(part.name)}", timeout=t)
    await conn.execute(f"ALTER TABLE {_ident(part.name)} RENAME TO {_ident(archived)}", timeout=t)
    # Its indexes too, or the month created again in prices gets prices_..._pkey1 and the like.
    for index in await conn.fetch(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass",
        archived, timeout=t,
    ):
        if index["relname"].startswith(part.name):
            renamed = archived + index["relname"].removeprefix(part.name)
            await conn.execute(f"ALTER INDEX {_ident(index['relname'])} RENAME TO {_ident(renamed)}", timeout=t)
    # The bounds CHECK that ensure_price_partitions() puts on every month spares ATTACH a scan.
    await conn.execute(f"ALTER TABLE prices_archive ATTACH PARTITION {_ident(archived)} {part.bound}", timeout=t)
    await conn.execute("SELECT ensure_price_partitions($1, $1)", part.month, timeout=t)
