"""Migrations: ordered, applied once, safe when two instances start together."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from backends.errors import MigrationError
from backends.migrator import apply_migrations, discover, pending_migrations
from tests.conftest import with_database


@pytest.fixture
async def scratch_url(database_url: str) -> AsyncIterator[str]:
    """A new empty database next to the session's."""
    server = await asyncpg.connect(database_url)
    # A name of its own: test runs of other checkouts share the server (a fixed name collided).
    name = f"migrator_scratch_{secrets.token_hex(4)}"
    await server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await server.execute(f'CREATE DATABASE "{name}"')
    await server.close()
    yield with_database(database_url, name)
    server = await asyncpg.connect(database_url)
    await server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await server.close()


async def test_two_instances_migrating_at_once_apply_each_file_once(scratch_url: str) -> None:
    a, b = await asyncpg.connect(scratch_url), await asyncpg.connect(scratch_url)
    try:
        applied_a, applied_b = await asyncio.gather(apply_migrations(a), apply_migrations(b))
        versions = [m.version for m in discover()]
        assert sorted(applied_a + applied_b) == versions  # each applied by exactly one of them
        assert await pending_migrations(a) == []
        assert await apply_migrations(a) == []  # a restart has nothing left to do
        assert await a.fetchval("SELECT count(*) FROM units") > 20
    finally:
        await a.close()
        await b.close()


async def test_editing_an_applied_migration_is_refused(scratch_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE t1 (x int);")
    conn = await asyncpg.connect(scratch_url)
    try:
        assert await apply_migrations(conn, tmp_path) == ["0001_first"]
        (tmp_path / "0001_first.sql").write_text("CREATE TABLE t1 (x int, y int);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await apply_migrations(conn, tmp_path)
    finally:
        await conn.close()


async def test_failed_migration_rolls_back_and_names_the_file(scratch_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok_table (x int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE half (x int); SELECT * FROM no_such_table;")
    conn = await asyncpg.connect(scratch_url)
    try:
        with pytest.raises(MigrationError, match=r"0002_broken\.sql failed"):
            await apply_migrations(conn, tmp_path)
        assert await conn.fetchval("SELECT to_regclass('ok_table') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regclass('half') IS NULL")  # nothing half-written
        assert await pending_migrations(conn, tmp_path) == ["0002_broken"]
    finally:
        await conn.close()


async def test_price_partitions_are_monthly_in_utc(pg) -> None:
    await pg.execute("SELECT ensure_price_partitions('2023-01-31 23:30+00', '2023-03-01 00:10+00')")
    names = {r["relname"] for r in await pg.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'prices'::regclass")}
    assert {"prices_2023_01", "prices_2023_02", "prices_2023_03"} <= names


async def test_price_months_get_their_bounds_whether_made_before_or_after_the_archive_migration(
    scratch_url: str, tmp_path: Path
) -> None:
    """0006 puts each month's bounds on it as a CHECK (months that existed, and the ones
    ensure_price_partitions() makes afterwards): ATTACH into the archive then skips its scan."""
    for migration in discover():
        if migration.version < "0006":
            (tmp_path / migration.path.name).write_bytes(migration.path.read_bytes())
    conn = await asyncpg.connect(scratch_url)
    try:
        await apply_migrations(conn, tmp_path)
        await conn.execute("SELECT ensure_price_partitions('2023-12-10+00', '2023-12-10+00')")
        assert "0006_price_archive" in await apply_migrations(conn)
        await conn.execute("SELECT ensure_price_partitions('2031-05-10+00', '2031-05-10+00')")
        checks = dict(await conn.fetch(
            "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname LIKE 'prices\\_%\\_bounds'"))
        assert set(checks) == {"prices_2023_12", "prices_2031_05"}
        # The month that existed gets it NOT VALID (no scan at start-up); a new month, valid.
        assert checks["prices_2023_12"].endswith("NOT VALID") and not checks["prices_2031_05"].endswith("NOT VALID")
        assert "2023-12-01" in checks["prices_2023_12"] and "2024-01-01" in checks["prices_2023_12"]
        assert "2031-05-01" in checks["prices_2031_05"] and "2031-06-01" in checks["prices_2031_05"]
    finally:
        await conn.close()
