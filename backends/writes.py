"""Catalog writes: materials and suppliers, validated, each in one transaction with its events.

Functions take already-decoded values and return either the written row or a list of
`Problem`s (what is wrong, where, and a code): expected failures are data, not exceptions,
so the GraphQL layer can put them in a payload's `errors`. Nothing is written when any
problem is found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from backends.catalog import MATERIAL_COLUMNS
from backends.outbox import record_events
from backends.postgres import PostgresBackend

UNSET: Any = object()  # a patch field the client did not send (null means "clear it")
MAX_NAME = 500
MAX_SKU = 64
MAX_BULK = 1000


@dataclass(frozen=True)
class Problem:
    field: tuple[str | int, ...]
    message: str
    code: str = "VALIDATION"  # VALIDATION | NOT_FOUND | CONFLICT


@dataclass
class MaterialValues:
    """A material's writable fields; UNSET in a patch means "leave as is"."""

    name: Any = UNSET
    sku: Any = UNSET
    description: Any = UNSET
    category_id: Any = UNSET  # decoded id, or None
    unit: Any = UNSET  # any alias; resolved to a unit code
    color: Any = UNSET
    attributes: Any = UNSET


def _clean(text: Any) -> Any:
    if text is UNSET or text is None:
        return text
    stripped = " ".join(str(text).split())
    return stripped or None


async def _validate(
    conn: asyncpg.Connection, values: MaterialValues, path: tuple[str | int, ...], *, creating: bool
) -> tuple[dict[str, Any], list[Problem]]:
    """Checks `values` and returns the columns to write (unit resolved to its code)."""
    problems: list[Problem] = []
    columns: dict[str, Any] = {}
    name = _clean(values.name)
    if name is not UNSET:
        if name is None:
            problems.append(Problem((*path, "name"), "must not be empty"))
        elif len(name) > MAX_NAME:
            problems.append(Problem((*path, "name"), f"is {len(name)} characters long; at most {MAX_NAME}"))
        else:
            columns["name"] = name
    elif creating:
        problems.append(Problem((*path, "name"), "is required"))
    sku = _clean(values.sku)
    if sku is not UNSET:
        if sku is not None and (len(sku) > MAX_SKU or " " in sku):
            problems.append(Problem((*path, "sku"), f'"{sku}" is not a SKU (no spaces, at most {MAX_SKU} characters)'))
        else:
            columns["sku"] = sku
    if values.unit is not UNSET:
        code = None
        if values.unit is not None and str(values.unit).strip():
            code = await conn.fetchval("SELECT unit_code FROM unit_aliases WHERE alias = lower(btrim($1))", str(values.unit))
        if code is None:
            problems.append(Problem((*path, "unit"), f'unknown unit "{values.unit}"'))
        else:
            columns["unit_code"] = code
    elif creating:
        problems.append(Problem((*path, "unit"), "is required"))
    if values.category_id is not UNSET:
        if values.category_id is not None and not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM categories WHERE id = $1)", values.category_id):
            problems.append(Problem((*path, "categoryId"), "no such category", "NOT_FOUND"))
        else:
            columns["category_id"] = values.category_id
    for field_name, column in (("description", "description"), ("color", "color")):
        value = getattr(values, field_name)
        if value is not UNSET:
            columns[column] = None if value is None else str(value).strip() or None
    if values.attributes is not UNSET:
        if values.attributes is not None and not isinstance(values.attributes, Mapping):
            problems.append(Problem((*path, "attributes"), "must be a JSON object"))
        else:
            columns["attributes"] = values.attributes
    return columns, problems


async def _sku_taken(conn: asyncpg.Connection, sku: str | None, except_id: int | None = None) -> bool:
    if sku is None:
        return False
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM materials WHERE sku = $1 AND deleted_at IS NULL AND id IS DISTINCT FROM $2)",
        sku, except_id))


def _event(topic: str, row: Mapping[str, Any], source: str = "api") -> tuple[str, int, dict[str, Any]]:
    return topic, row["id"], {"materialId": row["id"], "sku": row["sku"], "name": row["name"],
                              "unit": row["unit_code"], "source": source}


async def _insert(conn: asyncpg.Connection, columns: dict[str, Any]) -> asyncpg.Record:
    names = list(columns)
    return await conn.fetchrow(
        f"INSERT INTO materials AS m ({', '.join(names)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(names)))}) "
        f"RETURNING {MATERIAL_COLUMNS}", *columns.values())


async def _update(conn: asyncpg.Connection, material_id: int, columns: dict[str, Any]) -> asyncpg.Record:
    sets = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(columns))
    return await conn.fetchrow(
        f"UPDATE materials AS m SET {sets}{', ' if sets else ''}updated_at = now() WHERE id = $1 "
        f"RETURNING {MATERIAL_COLUMNS}", material_id, *columns.values())


def _conflict(path: tuple[str | int, ...]) -> Problem:
    return Problem(path, "the SKU belongs to another material (created at the same time)", "CONFLICT")


async def create_material(pg: PostgresBackend, values: MaterialValues) -> tuple[asyncpg.Record | None, list[Problem]]:
    try:
        return await _create_material(pg, values)
    except asyncpg.UniqueViolationError:  # another transaction took the SKU after our check
        return None, [_conflict(("input", "sku"))]


async def _create_material(pg: PostgresBackend, values: MaterialValues) -> tuple[asyncpg.Record | None, list[Problem]]:
    async with pg.transaction() as conn:
        columns, problems = await _validate(conn, values, ("input",), creating=True)
        if not problems and await _sku_taken(conn, columns.get("sku")):
            problems.append(Problem(("input", "sku"), f'SKU "{columns["sku"]}" belongs to another material', "CONFLICT"))
        if problems:
            return None, problems
        row = await _insert(conn, columns)
        await record_events(conn, [_event("material.created", _named(row))])
        return row, []


async def update_material(
    pg: PostgresBackend, material_id: int, values: MaterialValues
) -> tuple[asyncpg.Record | None, list[Problem]]:
    try:
        return await _update_material(pg, material_id, values)
    except asyncpg.UniqueViolationError:
        return None, [_conflict(("patch", "sku"))]


async def _update_material(
    pg: PostgresBackend, material_id: int, values: MaterialValues
) -> tuple[asyncpg.Record | None, list[Problem]]:
    async with pg.transaction() as conn:
        if not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM materials WHERE id = $1 AND deleted_at IS NULL FOR UPDATE)", material_id):
            return None, [Problem(("id",), "no such material", "NOT_FOUND")]
        columns, problems = await _validate(conn, values, ("patch",), creating=False)
        if not problems and "sku" in columns and await _sku_taken(conn, columns["sku"], material_id):
            problems.append(Problem(("patch", "sku"), f'SKU "{columns["sku"]}" belongs to another material', "CONFLICT"))
        if problems:
            return None, problems
        row = await _update(conn, material_id, columns)
        await record_events(conn, [_event("material.updated", _named(row))])
        return row, []


async def delete_material(pg: PostgresBackend, material_id: int) -> list[Problem]:
    """Soft delete: the row stays for the price history; reads no longer see it."""
    async with pg.transaction() as conn:
        row = await conn.fetchrow(
            "UPDATE materials SET deleted_at = now(), updated_at = now() WHERE id = $1 AND deleted_at IS NULL "
            "RETURNING id, sku, name, unit_code", material_id)
        if row is None:
            return [Problem(("id",), "no such material", "NOT_FOUND")]
        await conn.execute("DELETE FROM current_prices WHERE material_id = $1", material_id)
        await record_events(conn, [_event("material.deleted", row)])
        return []


async def upsert_materials(pg: PostgresBackend, items: Sequence[MaterialValues]) -> tuple[int, int, list[Problem]]:
    """Creates or updates (by SKU) every item, or none when any item has a problem."""
    if len(items) > MAX_BULK:
        return 0, 0, [Problem(("input",), f"{len(items)} items; at most {MAX_BULK} per call")]
    try:
        return await _upsert_materials(pg, items)
    except asyncpg.UniqueViolationError:
        return 0, 0, [_conflict(("input",))]


async def _upsert_materials(pg: PostgresBackend, items: Sequence[MaterialValues]) -> tuple[int, int, list[Problem]]:
    async with pg.transaction() as conn:
        planned: list[tuple[int | None, dict[str, Any]]] = []
        problems: list[Problem] = []
        seen_skus: dict[str, int] = {}
        for i, values in enumerate(items):
            columns, found = await _validate(conn, values, ("input", i), creating=True)
            problems += found
            sku = columns.get("sku")
            if sku is not None:
                if sku in seen_skus:
                    problems.append(Problem(("input", i, "sku"), f'SKU "{sku}" is also in input[{seen_skus[sku]}]',
                                            "CONFLICT"))
                seen_skus[sku] = i
            existing = await conn.fetchval(
                "SELECT id FROM materials WHERE sku = $1 AND deleted_at IS NULL FOR UPDATE", sku) if sku else None
            planned.append((existing, columns))
        if problems:
            return 0, 0, problems
        events, created, updated = [], 0, 0
        for existing, columns in planned:
            if existing is None:
                row = await _insert(conn, columns)
                events.append(_event("material.created", _named(row)))
                created += 1
            else:
                row = await _update(conn, existing, columns)
                events.append(_event("material.updated", _named(row)))
                updated += 1
        await record_events(conn, events)
        return created, updated, []


async def create_supplier(pg: PostgresBackend, name: Any) -> tuple[asyncpg.Record | None, list[Problem]]:
    clean = _clean(name)
    if clean is None:
        return None, [Problem(("name",), "must not be empty")]
    if len(clean) > MAX_NAME:
        return None, [Problem(("name",), f"is {len(clean)} characters long; at most {MAX_NAME}")]
    async with pg.transaction() as conn:
        row = await conn.fetchrow(
            "INSERT INTO suppliers (name) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id, name", clean)
        if row is None:
            return None, [Problem(("name",), f'a supplier named "{clean}" exists already', "CONFLICT")]
        await record_events(conn, [("supplier.created", row["id"], {"supplierId": row["id"], "name": row["name"]})])
        return row, []


def _named(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "sku": row["sku"], "name": row["name"], "unit_code": row["unit_code"]}
