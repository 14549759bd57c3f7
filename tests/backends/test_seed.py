"""The synthetic catalog generator: consistent rows, Russian vocabulary, current prices of active lists."""

from __future__ import annotations

import asyncpg
import pytest

from backends.seed import seed_catalog


async def _seed(conn: asyncpg.Connection, **kw: int) -> object:
    async with conn.transaction():
        return await seed_catalog(conn, **kw)


async def test_seed_creates_a_consistent_catalog(conn: asyncpg.Connection) -> None:
    stages: dict[str, int] = {}

    async def seed() -> object:
        async with conn.transaction():
            return await seed_catalog(conn, materials=600, prices=6000, months=6, seed=7,
                                      progress=lambda stage, rows: stages.__setitem__(stage, stages.get(stage, 0) + rows))

    report = await seed()
    counts = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM materials) AS materials, (SELECT count(*) FROM prices) AS prices, "
        "(SELECT count(*) FROM current_prices) AS current, (SELECT count(*) FROM price_lists) AS lists, "
        "(SELECT count(*) FROM suppliers) AS suppliers")
    assert counts["materials"] == report.materials == 600
    assert counts["prices"] == report.prices == stages["prices"]
    # The price budget is met within a month's worth of rows.
    assert 6000 * 0.8 <= report.prices <= 6000 * 1.2, report
    assert counts["current"] == report.current_prices > 0
    assert counts["lists"] == report.price_lists == report.suppliers * 6
    assert stages["materials"] == 600

    # Every current price is a row of its supplier's ACTIVE list, one per material and supplier.
    stray = await conn.fetchval(
        "SELECT count(*) FROM current_prices cp JOIN price_lists pl ON pl.id = cp.price_list_id "
        "WHERE pl.status <> 'ACTIVE' OR pl.supplier_id <> cp.supplier_id")
    assert stray == 0
    assert await conn.fetchval(
        "SELECT count(*) FROM (SELECT material_id, supplier_id FROM current_prices "
        "GROUP BY 1, 2 HAVING count(*) > 1) d") == 0
    assert await conn.fetchval("SELECT count(*) FROM price_lists WHERE status = 'ACTIVE'") == report.suppliers

    # Prices land in monthly partitions, never in the future, and are positive.
    assert await conn.fetchval("SELECT count(*) FROM prices WHERE valid_from > now() OR unit_price <= 0") == 0
    partitions = await conn.fetchval(
        "SELECT count(DISTINCT tableoid) FROM prices")
    assert partitions >= 6

    # Russian names from the suppliers' vocabulary, on leaf categories of a tree.
    names = [r["name"] for r in await conn.fetch("SELECT name FROM materials ORDER BY id LIMIT 50")]
    assert all(any("а" <= ch <= "я" or ch in "ёЁ" or "А" <= ch <= "Я" for ch in n) for n in names), names
    assert await conn.fetchval(
        "SELECT count(*) FROM materials m JOIN categories c ON c.id = m.category_id WHERE c.parent_id IS NULL") == 0
    assert await conn.fetchval("SELECT count(DISTINCT unit_code) FROM materials") >= 4


async def test_same_seed_gives_the_same_catalog(conn: asyncpg.Connection) -> None:
    await _seed(conn, materials=200, prices=1000, months=3, seed=11)
    first = [tuple(r) for r in await conn.fetch("SELECT sku, name, unit_code FROM materials ORDER BY sku")]
    await conn.execute("TRUNCATE current_prices, prices, price_lists, materials, suppliers, categories CASCADE")
    await _seed(conn, materials=200, prices=1000, months=3, seed=11)
    second = [tuple(r) for r in await conn.fetch("SELECT sku, name, unit_code FROM materials ORDER BY sku")]
    assert first == second
    await conn.execute("TRUNCATE current_prices, prices, price_lists, materials, suppliers, categories CASCADE")
    await _seed(conn, materials=200, prices=1000, months=3, seed=12)
    third = [tuple(r) for r in await conn.fetch("SELECT sku, name, unit_code FROM materials ORDER BY sku")]
    assert first != third


async def test_seeding_twice_appends_with_fresh_skus(conn: asyncpg.Connection) -> None:
    await _seed(conn, materials=100, prices=500, months=2)
    await _seed(conn, materials=100, prices=500, months=2)
    assert await conn.fetchval("SELECT count(DISTINCT sku) FROM materials") == 200


@pytest.mark.parametrize("kw", [{"materials": -1}, {"months": 0}, {"suppliers": 0}])
async def test_seed_rejects_bad_sizes(conn: asyncpg.Connection, kw: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        await seed_catalog(conn, **kw)
