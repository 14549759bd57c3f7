"""materials.category_id and materials.unit_code are checked per statement (migration 0010), not
by foreign keys: the same refusals as the foreign keys gave, on both sides."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from backends.postgres import PostgresBackend


async def _category(conn: asyncpg.Connection, name: str = "Кирпич") -> int:
    return await conn.fetchval("INSERT INTO categories (name) VALUES ($1) RETURNING id", name)


async def test_a_material_must_name_an_existing_category_and_unit(conn: asyncpg.Connection) -> None:
    category = await _category(conn)
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="categories"):
        await conn.execute("INSERT INTO materials (name, unit_code, category_id) VALUES ('Кирпич', 'шт', $1)",
                           category + 1000)
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="units"):
        await conn.execute("INSERT INTO materials (name, unit_code, category_id) VALUES ('Кирпич', 'парсек', $1)",
                           category)
    # One bad row among many refuses the whole statement.
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await conn.execute(
            "INSERT INTO materials (name, unit_code, category_id) "
            "SELECT 'Кирпич ' || g, 'шт', CASE WHEN g = 500 THEN -1 ELSE $1 END FROM generate_series(1, 1000) g",
            category)
    assert await conn.fetchval("SELECT count(*) FROM materials") == 0
    material = await conn.fetchval(
        "INSERT INTO materials (name, unit_code, category_id) VALUES ('Кирпич', 'шт', $1) RETURNING id", category)
    await conn.execute("INSERT INTO materials (name, unit_code) VALUES ('Без категории', 'кг')")
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="categories"):
        await conn.execute("UPDATE materials SET category_id = $2 WHERE id = $1", material, category + 1000)
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="units"):
        await conn.execute("UPDATE materials SET unit_code = 'парсек' WHERE id = $1", material)
    await conn.execute("UPDATE materials SET unit_code = 'кг', category_id = NULL WHERE id = $1", material)


async def test_a_referenced_category_or_unit_stays(conn: asyncpg.Connection) -> None:
    used, unused = await _category(conn, "Кирпич"), await _category(conn, "Пустая")
    await conn.execute("INSERT INTO materials (name, unit_code, category_id, deleted_at) "
                       "VALUES ('Кирпич', 'шт', $1, now())", used)  # soft-deleted rows count too
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="still referenced"):
        await conn.execute("DELETE FROM categories WHERE id = $1", used)
    await conn.execute("DELETE FROM categories WHERE id = $1", unused)
    await conn.execute("INSERT INTO units (code, name) VALUES ('тест', 'тестовая') ON CONFLICT DO NOTHING")
    try:
        await conn.execute("INSERT INTO materials (name, unit_code) VALUES ('Тест', 'тест')")
        async with conn.transaction():
            with pytest.raises(asyncpg.ForeignKeyViolationError, match="still referenced"):
                await conn.execute("DELETE FROM units WHERE code = 'тест'")
        # A unit's code renamed follows into materials (ON UPDATE CASCADE before).
        await conn.execute("UPDATE units SET code = 'тест2' WHERE code = 'тест'")
        assert await conn.fetchval("SELECT unit_code FROM materials WHERE name = 'Тест'") == "тест2"
    finally:
        await conn.execute("DELETE FROM materials WHERE unit_code IN ('тест', 'тест2')")
        await conn.execute("DELETE FROM unit_aliases WHERE unit_code IN ('тест', 'тест2')")
        await conn.execute("DELETE FROM units WHERE code IN ('тест', 'тест2')")


async def test_a_category_deleted_while_a_material_takes_it_waits_and_is_refused(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection
) -> None:
    """The check locks the categories it relies on (FOR KEY SHARE, as a foreign key does): a
    concurrent DELETE waits for the writer's commit, then sees the new material and is refused."""
    category = await _category(conn)
    async with empty_catalog.pool.acquire() as other:
        writer = conn.transaction()
        await writer.start()
        await conn.execute("INSERT INTO materials (name, unit_code, category_id) VALUES ('Кирпич', 'шт', $1)", category)
        deleting = asyncio.ensure_future(other.execute("DELETE FROM categories WHERE id = $1", category))
        await asyncio.sleep(0.3)
        assert not deleting.done()  # waits for the writer
        await writer.commit()
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await deleting
    assert await conn.fetchval("SELECT count(*) FROM categories WHERE id = $1", category) == 1


async def test_an_update_that_keeps_the_category_locks_nothing(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection
) -> None:
    """Like a foreign key, an update checks only references it changes: renaming a material
    takes no lock on its category (a category row locked by every write would serialise
    writers behind whoever locks it FOR UPDATE); changing the category does lock the new one."""
    category, other = await _category(conn, "Кирпич"), await _category(conn, "Блоки")
    material = await conn.fetchval(
        "INSERT INTO materials (name, unit_code, category_id) VALUES ('Кирпич', 'шт', $1) RETURNING id", category)
    async with empty_catalog.pool.acquire() as locker:
        async with conn.transaction():
            await conn.execute("UPDATE materials SET name = 'Кирпич красный' WHERE id = $1", material)
            async with locker.transaction():
                await locker.execute("SELECT 1 FROM categories WHERE id = $1 FOR UPDATE NOWAIT", category)
            await conn.execute("UPDATE materials SET category_id = $2 WHERE id = $1", material, other)
            async with locker.transaction():
                with pytest.raises(asyncpg.LockNotAvailableError):
                    await locker.execute("SELECT 1 FROM categories WHERE id = $1 FOR UPDATE NOWAIT", other)
