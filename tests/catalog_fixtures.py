"""Small, known catalogs written with plain SQL, for tests that need exact expectations.

Names come from ../shared/data/supplier-samples (etronicspy/rag-stroyactiv-pyton, MIT).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg


async def insert_category(conn: asyncpg.Connection, name: str, parent_id: int | None = None) -> int:
    parent_path = [] if parent_id is None else await conn.fetchval("SELECT path FROM categories WHERE id = $1", parent_id)
    cid = await conn.fetchval("INSERT INTO categories (name, parent_id) VALUES ($1, $2) RETURNING id", name, parent_id)
    await conn.execute("UPDATE categories SET path = $2 WHERE id = $1", cid, [*parent_path, cid])
    return cid


async def insert_material(
    conn: asyncpg.Connection, name: str, unit: str, *, sku: str | None = None, category_id: int | None = None,
    updated_at: datetime | None = None,
) -> int:
    return await conn.fetchval(
        "INSERT INTO materials (name, unit_code, sku, category_id, updated_at) "
        "VALUES ($1, $2, $3, $4, coalesce($5, now())) RETURNING id",
        name, unit, sku, category_id, updated_at,
    )


async def insert_supplier(conn: asyncpg.Connection, name: str) -> int:
    return await conn.fetchval("INSERT INTO suppliers (name) VALUES ($1) RETURNING id", name)


async def insert_price_list(
    conn: asyncpg.Connection, supplier_id: int, version: int, effective_at: datetime,
    prices: list[tuple[int, str, str]], *, active: bool = True,
) -> int:
    """A price list with (material id, unit price, currency) rows; an active one becomes current."""
    status = "ACTIVE" if active else "SUPERSEDED"
    pl = await conn.fetchval(
        "INSERT INTO price_lists (supplier_id, version, status, checksum, effective_at, row_count) "
        "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        supplier_id, version, status, f"test-{supplier_id}-{version}", effective_at, len(prices),
    )
    await conn.execute("SELECT ensure_price_partitions($1, $1)", effective_at)
    for material_id, unit_price, currency in prices:
        await conn.execute(
            "INSERT INTO prices (material_id, supplier_id, price_list_id, unit_price, currency, valid_from) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            material_id, supplier_id, pl, Decimal(unit_price), currency, effective_at,
        )
    if active:
        await conn.execute("DELETE FROM current_prices WHERE supplier_id = $1", supplier_id)
        await conn.execute(
            "INSERT INTO current_prices (material_id, supplier_id, price_id, price_list_id, unit_price, currency, "
            "calc_unit_code, unit_calc_price, buy_price, sale_price, stock, price_date, valid_from) "
            "SELECT material_id, supplier_id, id, price_list_id, unit_price, currency, calc_unit_code, "
            "unit_calc_price, buy_price, sale_price, stock, price_date, valid_from FROM prices WHERE price_list_id = $1",
            pl,
        )
    return pl


@dataclass
class SmallCatalog:
    """Ids of the rows written by small_catalog()."""

    categories: dict[str, int] = field(default_factory=dict)
    materials: dict[str, int] = field(default_factory=dict)
    suppliers: dict[str, int] = field(default_factory=dict)
    price_lists: dict[str, int] = field(default_factory=dict)


JAN = datetime(2024, 1, 15, tzinfo=UTC)
FEB = datetime(2024, 2, 15, tzinfo=UTC)
MAR = datetime(2024, 3, 15, tzinfo=UTC)


async def small_catalog(conn: asyncpg.Connection) -> SmallCatalog:
    """Two category trees, seven materials, two suppliers with price history."""
    c = SmallCatalog()
    c.categories["binders"] = await insert_category(conn, "Вяжущие материалы")
    c.categories["cement"] = await insert_category(conn, "Цемент", c.categories["binders"])
    c.categories["metal"] = await insert_category(conn, "Металлопрокат")
    c.categories["rebar"] = await insert_category(conn, "Арматура", c.categories["metal"])
    c.categories["bulk"] = await insert_category(conn, "Сыпучие материалы")
    m = c.materials
    m["cem400"] = await insert_material(conn, "Цемент М400 50кг", "мешок", sku="CEM0001", category_id=c.categories["cement"])
    m["cem500"] = await insert_material(conn, "Цемент М500 50кг", "мешок", sku="CEM0002", category_id=c.categories["cement"])
    m["binder"] = await insert_material(conn, "Известь гашёная", "кг", sku="LIM0001", category_id=c.categories["binders"])
    m["arm12"] = await insert_material(conn, "Арматура А500С Ø12мм", "т", sku="ARM0001", category_id=c.categories["rebar"])
    m["arm14"] = await insert_material(conn, "Арматура А500С Ø14мм", "т", sku="ARM0002", category_id=c.categories["rebar"])
    m["sand"] = await insert_material(conn, "Песок речной", "м³", sku="SND0002", category_id=c.categories["bulk"])
    m["gravel"] = await insert_material(conn, "Щебень гранитный 5-20мм", "м³", category_id=c.categories["bulk"])
    s = c.suppliers
    s["a"] = await insert_supplier(conn, "ООО «СтройТорг»")
    s["b"] = await insert_supplier(conn, "АО «Металлснаб»")
    c.price_lists["a1"] = await insert_price_list(
        conn, s["a"], 1, JAN, [(m["cem400"], "300.00", "RUB"), (m["sand"], "1000.00", "RUB")], active=False
    )
    c.price_lists["a2"] = await insert_price_list(
        conn, s["a"], 2, FEB,
        [(m["cem400"], "320.00", "RUB"), (m["cem500"], "380.00", "RUB"), (m["sand"], "1100.00", "RUB")],
    )
    c.price_lists["b1"] = await insert_price_list(
        conn, s["b"], 1, MAR,
        [(m["cem400"], "310.50", "RUB"), (m["arm12"], "64000.00", "RUB"), (m["arm14"], "63500.00", "RUB"),
         (m["cem500"], "5.10", "USD")],
    )
    return c


async def indexed_materials(pg: Any, names: list[str], unit: str = "шт") -> tuple[dict[str, int], Any, Any]:
    """Materials named `names` (ids by name), their text documents and their vectors built by
    the indexers: the hash test embedder (64 dims) into qdrant-client's in-memory store. The
    caller closes the store."""
    from backends.embedder import HashEmbedder
    from backends.search_index import TextIndexer, VectorIndexer
    from backends.vectors import QdrantClientIndex
    from backends.writes import MaterialValues, create_material

    ids = {}
    for name in names:
        created, _ = await create_material(pg, MaterialValues(name=name, unit=unit))
        ids[name] = created["id"]
    await TextIndexer(pg).rebuild()
    embedder = HashEmbedder(64)
    index = QdrantClientIndex(location=":memory:")
    await index.open(embedder.model_id, embedder.dim)
    await VectorIndexer(pg, embedder, index).rebuild()
    return ids, embedder, index
