"""Archiving price lists on a real PostgreSQL: rows leave prices for prices_archive, whole
months by DETACH/ATTACH, shared months row by row; all or nothing; twice is once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from backends.archive import archive_price_lists
from backends.postgres import PostgresBackend
from tests.catalog_fixtures import insert_material, insert_price_list, insert_supplier

JAN, FEB, MAR = (datetime(2024, m, 10, tzinfo=UTC) for m in (1, 2, 3))
LATER = datetime(2025, 1, 1, tzinfo=UTC)


async def drop_archive_partitions(conn: asyncpg.Connection) -> None:
    for r in await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'prices_archive'::regclass AND c.relkind = 'r'"
    ):
        await conn.execute(f'DROP TABLE "{r["relname"]}"')


@pytest.fixture
async def db(conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """An empty catalog whose archive has no partitions left by earlier tests."""
    await drop_archive_partitions(conn)
    yield conn


async def two_suppliers(conn: asyncpg.Connection) -> dict[str, int]:
    """A: v1 in January (superseded), v2 in February (active). B: v1 in February (superseded),
    v2 in March (active). January then holds only an archivable list; February holds both."""
    materials = [await insert_material(conn, f"Цемент М{400 + 100 * i}", "т") for i in range(5)]
    a, b = await insert_supplier(conn, "ООО «Альфа»"), await insert_supplier(conn, "ООО «Бета»")
    lists = {
        "a1": await insert_price_list(conn, a, 1, JAN, [(m, f"{5000 + i}", "RUB") for i, m in enumerate(materials)],
                                      active=False),
        "a2": await insert_price_list(conn, a, 2, FEB, [(m, f"{5100 + i}", "RUB") for i, m in enumerate(materials)]),
        "b1": await insert_price_list(conn, b, 1, FEB, [(m, f"{4900 + i}", "RUB") for i, m in enumerate(materials)],
                                      active=False),
        "b2": await insert_price_list(conn, b, 2, MAR, [(m, f"{4950 + i}", "RUB") for i, m in enumerate(materials)]),
    }
    await conn.execute("UPDATE price_lists SET superseded_at = $2 WHERE id = $1", lists["a1"], FEB)
    await conn.execute("UPDATE price_lists SET superseded_at = $2 WHERE id = $1", lists["b1"], MAR)
    return lists


async def counts(conn: asyncpg.Connection) -> tuple[int, int]:
    return (await conn.fetchval("SELECT count(*) FROM prices"), await conn.fetchval("SELECT count(*) FROM prices_archive"))


async def parent_of(conn: asyncpg.Connection, table: str) -> str | None:
    return await conn.fetchval(
        "SELECT inhparent::regclass::text FROM pg_inherits WHERE inhrelid = to_regclass($1)", table)


async def test_archive_attaches_whole_months_and_moves_rows_of_shared_ones(
    db: asyncpg.Connection, empty_catalog: PostgresBackend
) -> None:
    lists = await two_suppliers(db)
    current = await db.fetch("SELECT * FROM current_prices ORDER BY material_id, supplier_id")
    assert await counts(db) == (20, 0)

    result = await archive_price_lists(empty_catalog, LATER)

    assert (result.price_lists, result.prices, result.rows_attached, result.rows_moved) == (2, 10, 5, 5)
    assert result.partitions_attached == ["prices_archive_2024_01"]
    assert await counts(db) == (10, 10)
    assert await db.fetchval("SELECT count(*) FROM prices WHERE price_list_id = ANY($1::bigint[])",
                             [lists["a1"], lists["b1"]]) == 0
    # January went over whole; February's archived rows were copied into a new archive month.
    assert await parent_of(db, "prices_archive_2024_01") == "prices_archive"
    assert await parent_of(db, "prices_archive_2024_02") == "prices_archive"
    assert await db.fetchval("SELECT count(*) FROM prices_archive_2024_01") == 5
    assert await db.fetchval("SELECT count(*) FROM prices_archive_2024_02") == 5
    # January exists again in prices, empty, for prices dated in it later.
    assert await parent_of(db, "prices_2024_01") == "prices"
    assert await db.fetchval("SELECT count(*) FROM prices_2024_01") == 0
    statuses = dict(await db.fetch("SELECT id, status FROM price_lists"))
    assert statuses == {lists["a1"]: "ARCHIVED", lists["a2"]: "ACTIVE", lists["b1"]: "ARCHIVED", lists["b2"]: "ACTIVE"}
    assert await db.fetch("SELECT * FROM current_prices ORDER BY material_id, supplier_id") == current
    events = await db.fetch("SELECT entity_id, payload FROM events WHERE topic = 'price_list.archived' ORDER BY id")
    assert [(e["entity_id"], e["payload"]["prices"]) for e in events] == [(lists["a1"], 5), (lists["b1"], 5)]


async def test_archived_prices_are_the_same_rows_with_the_same_ids(
    db: asyncpg.Connection, empty_catalog: PostgresBackend
) -> None:
    await two_suppliers(db)
    before = await db.fetch("SELECT * FROM price_history ORDER BY id")
    await archive_price_lists(empty_catalog, LATER)
    assert await db.fetch("SELECT * FROM price_history ORDER BY id") == before


async def test_second_run_changes_nothing(db: asyncpg.Connection, empty_catalog: PostgresBackend) -> None:
    await two_suppliers(db)
    await archive_price_lists(empty_catalog, LATER)
    state = (await counts(db), await db.fetch("SELECT * FROM price_lists ORDER BY id"),
             await db.fetchval("SELECT count(*) FROM events"))

    again = await archive_price_lists(empty_catalog, LATER)

    assert (again.price_lists, again.prices, again.rows_moved, again.partitions_attached) == (0, 0, 0, [])
    assert (await counts(db), await db.fetch("SELECT * FROM price_lists ORDER BY id"),
            await db.fetchval("SELECT count(*) FROM events")) == state


async def test_only_lists_superseded_before_the_date_are_archived(
    db: asyncpg.Connection, empty_catalog: PostgresBackend
) -> None:
    lists = await two_suppliers(db)
    result = await archive_price_lists(empty_catalog, datetime(2024, 2, 20, tzinfo=UTC))  # b1 superseded in March
    assert (result.price_lists, result.prices) == (1, 5)
    assert await db.fetchval("SELECT status FROM price_lists WHERE id = $1", lists["b1"]) == "SUPERSEDED"
    assert await counts(db) == (15, 5)


async def test_a_failure_part_way_leaves_nothing_half_moved(
    db: asyncpg.Connection, empty_catalog: PostgresBackend
) -> None:
    lists = await two_suppliers(db)
    before = (await counts(db), await db.fetch("SELECT * FROM price_lists ORDER BY id"))
    # The events are written last, after the rows moved and January was detached and attached.
    await db.execute("""CREATE FUNCTION refuse_archive_event() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'archive broken on purpose'; END $$""")
    await db.execute("CREATE TRIGGER refuse_archive_event BEFORE INSERT ON events FOR EACH ROW "
                     "WHEN (NEW.topic = 'price_list.archived') EXECUTE FUNCTION refuse_archive_event()")
    try:
        with pytest.raises(asyncpg.RaiseError, match="broken on purpose"):
            await archive_price_lists(empty_catalog, LATER)
        assert (await counts(db), await db.fetch("SELECT * FROM price_lists ORDER BY id")) == before
        assert await parent_of(db, "prices_2024_01") == "prices"
        assert await db.fetchval("SELECT count(*) FROM prices_2024_01") == 5
        assert await db.fetchval("SELECT to_regclass('prices_archive_2024_01')") is None
    finally:
        await db.execute("DROP TRIGGER refuse_archive_event ON events")
        await db.execute("DROP FUNCTION refuse_archive_event()")

    result = await archive_price_lists(empty_catalog, LATER)  # the same run, unbroken, then does it all
    assert (result.price_lists, result.prices) == (2, 10)
    assert await db.fetchval("SELECT status FROM price_lists WHERE id = $1", lists["a1"]) == "ARCHIVED"


async def test_busy_prices_get_their_rows_moved_instead_of_waiting_for_detach(
    db: asyncpg.Connection, empty_catalog: PostgresBackend, database_url: str
) -> None:
    """A long read holding prices: DETACH would queue every later reader behind it, so after
    lock_timeout the month's rows are moved instead."""
    await two_suppliers(db)
    reader = await asyncpg.connect(database_url)
    try:
        async with reader.transaction():
            await reader.fetchval("SELECT count(*) FROM prices")
            result = await archive_price_lists(empty_catalog, LATER, lock_timeout_s=0.2)
    finally:
        await reader.close()
    assert (result.price_lists, result.prices, result.rows_moved, result.partitions_attached) == (2, 10, 10, [])
    assert await parent_of(db, "prices_2024_01") == "prices"
    assert await counts(db) == (10, 10)


async def test_prices_dated_in_an_archived_month_still_land_in_prices(
    db: asyncpg.Connection, empty_catalog: PostgresBackend
) -> None:
    await two_suppliers(db)
    await archive_price_lists(empty_catalog, LATER)
    material = await db.fetchval("SELECT min(id) FROM materials")
    supplier = await insert_supplier(db, "ООО «Гамма»")
    old = await insert_price_list(db, supplier, 1, datetime(2024, 1, 20, tzinfo=UTC), [(material, "100", "RUB")])
    new = await insert_price_list(db, supplier, 2, datetime(2024, 7, 1, tzinfo=UTC), [(material, "110", "RUB")])
    assert await db.fetchval("SELECT count(*) FROM prices_2024_01 WHERE price_list_id = $1", old) == 1
    assert await db.fetchval("SELECT count(*) FROM prices_2024_07 WHERE price_list_id = $1", new) == 1
    assert await db.fetchval("SELECT count(*) FROM prices_archive WHERE price_list_id = ANY($1::bigint[])",
                             [old, new]) == 0
    # A writer that does not call ensure_price_partitions() finds January too: it was created
    # again in the transaction that moved the old one out.
    await db.execute("INSERT INTO prices (material_id, supplier_id, price_list_id, unit_price, valid_from) "
                     "VALUES ($1, $2, $3, 1, '2024-01-25+00')", material, supplier, old)


async def test_a_later_archive_of_a_month_already_in_the_archive_moves_rows(
    db: asyncpg.Connection, empty_catalog: PostgresBackend
) -> None:
    """January goes over whole; a list dated in January imported afterwards and archived
    later cannot reuse the month's partition (the archive has it): its rows are copied."""
    await two_suppliers(db)
    await archive_price_lists(empty_catalog, LATER)
    material = await db.fetchval("SELECT min(id) FROM materials")
    supplier = await insert_supplier(db, "ООО «Гамма»")
    old = await insert_price_list(db, supplier, 1, datetime(2024, 1, 20, tzinfo=UTC), [(material, "100", "RUB")],
                                  active=False)
    await db.execute("UPDATE price_lists SET superseded_at = '2024-06-01+00' WHERE id = $1", old)
    result = await archive_price_lists(empty_catalog, LATER)
    assert (result.price_lists, result.rows_moved, result.partitions_attached) == (1, 1, [])
    assert await db.fetchval("SELECT count(*) FROM prices_archive_2024_01 WHERE price_list_id = $1", old) == 1


async def test_lists_archived_before_the_archive_table_existed_get_their_rows_moved(
    db: asyncpg.Connection, empty_catalog: PostgresBackend
) -> None:
    """The first version of archivePriceLists only flipped the status: those rows move now."""
    lists = await two_suppliers(db)
    await db.execute("UPDATE price_lists SET status = 'ARCHIVED' WHERE id = $1", lists["a1"])
    result = await archive_price_lists(empty_catalog, datetime(2024, 1, 1, tzinfo=UTC))  # nothing newly superseded
    assert (result.price_lists, result.prices, result.partitions_attached) == (1, 5, ["prices_archive_2024_01"])
    assert await db.fetchval("SELECT archived_at IS NOT NULL FROM price_lists WHERE id = $1", lists["a1"])


async def test_new_archive_months_do_not_lock_out_history_readers(db: asyncpg.Connection) -> None:
    """Row moves create archive months inside the archive transaction: they must not take
    the ACCESS EXCLUSIVE lock that CREATE TABLE ... PARTITION OF takes on prices_archive,
    which priceHistory reads wait for (until commit)."""
    async with db.transaction():
        await db.execute("SELECT ensure_price_archive_partitions('2030-03-05+00', '2030-04-05+00')")
        modes = {r["mode"] for r in await db.fetch(
            "SELECT mode FROM pg_locks WHERE pid = pg_backend_pid() AND relation = 'prices_archive'::regclass")}
        assert "AccessExclusiveLock" not in modes and "ShareUpdateExclusiveLock" in modes
    assert await parent_of(db, "prices_archive_2030_03") == "prices_archive"
    assert await parent_of(db, "prices_archive_2030_04") == "prices_archive"
    indexes = await db.fetchval(
        "SELECT count(*) FROM pg_index WHERE indrelid = 'prices_archive_2030_03'::regclass")
    assert indexes == 3  # the primary key and both indexes of prices_archive


async def test_archive_waits_for_an_import_in_flight_and_sees_what_it_wrote(
    db: asyncpg.Connection, empty_catalog: PostgresBackend, database_url: str
) -> None:
    """An import holding a January row of a live list when the archive starts: the archive
    waits for it (no deadlock), then finds January shared and moves rows instead of detaching."""
    lists = await two_suppliers(db)
    material, supplier = await db.fetchrow("SELECT material_id, supplier_id FROM prices WHERE price_list_id = $1 "
                                           "LIMIT 1", lists["a2"])
    importer = await asyncpg.connect(database_url)
    try:
        transaction = importer.transaction()
        await transaction.start()
        await importer.execute("SELECT ensure_price_partitions('2024-01-20+00', '2024-01-20+00')")  # as imports do
        await importer.execute("INSERT INTO prices (material_id, supplier_id, price_list_id, unit_price, valid_from) "
                               "VALUES ($1, $2, $3, 1, '2024-01-20+00')", material, supplier, lists["a2"])
        archiving = asyncio.create_task(archive_price_lists(empty_catalog, LATER))
        await asyncio.sleep(0.5)
        assert not archiving.done()
        await transaction.commit()
        result = await asyncio.wait_for(archiving, 60)
    finally:
        await importer.close()
    assert (result.price_lists, result.prices, result.rows_moved, result.partitions_attached) == (2, 10, 10, [])
    assert await db.fetchval("SELECT count(*) FROM prices_2024_01") == 1  # the live list's row stayed
    assert await counts(db) == (11, 10)



async def test_a_dry_run_says_what_would_move_and_changes_nothing(
    db: asyncpg.Connection, empty_catalog: PostgresBackend
) -> None:
    await two_suppliers(db)
    state = (await counts(db), await db.fetch("SELECT * FROM price_lists ORDER BY id"),
             await db.fetchval("SELECT count(*) FROM events"))
    planned = await archive_price_lists(empty_catalog, LATER, dry_run=True)
    assert (await counts(db), await db.fetch("SELECT * FROM price_lists ORDER BY id"),
            await db.fetchval("SELECT count(*) FROM events")) == state
    assert await parent_of(db, "prices_2024_01") == "prices"
    done = await archive_price_lists(empty_catalog, LATER)
    assert (planned.price_lists, planned.prices, planned.rows_attached, planned.rows_moved,
            planned.partitions_attached) == (done.price_lists, done.prices, done.rows_attached, done.rows_moved,
                                             done.partitions_attached) == (2, 10, 5, 5, ["prices_archive_2024_01"])


async def test_a_month_older_than_the_migration_is_validated_before_it_is_detached(
    db: asyncpg.Connection, empty_catalog: PostgresBackend
) -> None:
    """Months that existed before 0006 carry their bounds NOT VALID; the archive validates
    January's before detaching it, so that ATTACH can skip its scan."""
    await two_suppliers(db)
    await db.execute("ALTER TABLE prices_2024_01 DROP CONSTRAINT prices_2024_01_bounds")
    await db.execute("ALTER TABLE prices_2024_01 ADD CONSTRAINT prices_2024_01_bounds "
                     "CHECK (valid_from >= '2024-01-01+00' AND valid_from < '2024-02-01+00') NOT VALID")
    result = await archive_price_lists(empty_catalog, LATER)
    assert result.partitions_attached == ["prices_archive_2024_01"]
    assert await db.fetchval("SELECT convalidated FROM pg_constraint WHERE conname = 'prices_2024_01_bounds' "
                             "AND conrelid = 'prices_archive_2024_01'::regclass")
