"""Migrations: ordered, applied once, safe when two instances start together."""

from __future__ import annotations

import asyncio
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
    name = "migrator_scratch"
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
