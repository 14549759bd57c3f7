"""Catalog reads: units, categories, suppliers and keyset pages of materials.

Every function takes lists of keys and answers them in one statement, so the DataLoaders
above can batch a whole nesting level into one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from backends.postgres import PostgresBackend
from backends.sql import PageSpec, SqlParams, keyset_condition, like_prefix

# The columns of a material row, in groups a page reads only when its query selects them
# (MaterialReadPlan): asyncpg decodes every value, and on a 50-row page the columns nobody
# selected cost more than the ones selected. Timestamps travel as integer microseconds
# since the epoch and become datetimes only when selected (schema.material): decoding
# timestamptz values was a third of the client-side cost of a page.
MATERIAL_KEY_COLUMNS = "m.id, m.sku, m.name, m.category_id, m.unit_code"
MATERIAL_DETAIL_COLUMNS = "m.description, m.color, m.attributes"
MATERIAL_TIME_COLUMNS = (
    "(extract(epoch FROM m.created_at) * 1000000)::bigint AS created_us, "
    "(extract(epoch FROM m.updated_at) * 1000000)::bigint AS updated_us"
)
# A whole row, for lookups by id or SKU; `deleted` stands for `deleted_at IS NOT NULL`.
MATERIAL_COLUMNS = (
    f"{MATERIAL_KEY_COLUMNS}, {MATERIAL_DETAIL_COLUMNS}, {MATERIAL_TIME_COLUMNS}, "
    "m.deleted_at IS NOT NULL AS deleted"
)

# Each material's category and unit, read along as plain columns so that a page needs no
# second and third round trip for them (loaders.base.prime_companions builds their rows).
# Plain columns, not composite `categories` values: asyncpg decodes those ~6x slower.
CATEGORY_COMPANION_COLUMNS = "c.parent_id AS category_parent_id, c.name AS category_name"
CATEGORY_COMPANION_JOIN = "LEFT JOIN categories c ON c.id = m.category_id"
UNIT_COMPANION_COLUMNS = "u.name AS unit_name, array_to_string(u.aliases, E'\\x1f') AS unit_aliases"
UNIT_COMPANION_JOIN = "LEFT JOIN units u ON u.code = m.unit_code"
MATERIAL_COMPANION_COLUMNS = f"{CATEGORY_COMPANION_COLUMNS}, {UNIT_COMPANION_COLUMNS}"
MATERIAL_COMPANION_JOINS = f"{CATEGORY_COMPANION_JOIN} {UNIT_COMPANION_JOIN}"
# Each material's current prices (cheapest first) with their supplier names, read along
# with a page as plain columns of a LEFT JOIN: one row per (material, current price), or one
# row with NULL price columns for a material without any (CatalogReader.material_page folds
# them; loaders.base.prime_current_prices primes the loaders). Plain columns, not a JSON
# aggregate: building, sorting and grouping 13-element JSON arrays per price cost the page
# statement ~0.2 ms of PostgreSQL time, and decoding them cost Python more than asyncpg's
# native codecs do.
CURRENT_PRICE_COLUMNS = (
    "cp.price_id AS cp_id, cp.supplier_id AS cp_supplier_id, cp.price_list_id AS cp_price_list_id, "
    "cp.unit_price AS cp_unit_price, cp.currency AS cp_currency, cp.calc_unit_code AS cp_calc_unit_code, "
    "cp.unit_calc_price AS cp_unit_calc_price, cp.buy_price AS cp_buy_price, cp.sale_price AS cp_sale_price, "
    "cp.stock AS cp_stock, cp.price_date AS cp_price_date, cp.valid_from AS cp_valid_from, "
    "sp.name AS cp_supplier_name"
)
# What a page reads of its current prices when its query selects no more of them than the
# unit price, the currency and the supplier (MaterialReadPlan.whole_prices False): the
# page's objects take these, the loaders are not primed with such partial rows. Decoding the
# eight other columns (four numerics, a date, a timestamp) was ~40% of the page's client cost.
PRICE_SUMMARY_COLUMNS = (
    "cp.supplier_id AS cp_supplier_id, cp.unit_price AS cp_unit_price, cp.currency AS cp_currency, "
    "sp.name AS cp_supplier_name"
)
CURRENT_PRICE_JOINS = (
    "LEFT JOIN current_prices cp ON cp.material_id = p.id LEFT JOIN suppliers sp ON sp.id = cp.supplier_id"
)
CURRENT_PRICE_ORDER = "cp.unit_price, cp.supplier_id"


@dataclass(frozen=True)
class MaterialReadPlan:
    """What a page of materials must bring besides the row: decided from the query's selection."""

    details: bool = True  # description, color, attributes
    timestamps: bool = True  # created_us, updated_us
    category: bool = True  # the category's columns (loaders.base.category_of)
    unit: bool = True  # the unit's columns (loaders.base.unit_of)
    current_prices: bool = False  # a row per current price
    # Every column of the current prices (CURRENT_PRICE_COLUMNS: rows the loaders can be
    # primed with), or only PRICE_SUMMARY_COLUMNS (see there).
    whole_prices: bool = True


FULL_ROWS = MaterialReadPlan()


def fold_current_prices(
    rows: Sequence[asyncpg.Record], whole: bool = True
) -> tuple[list[asyncpg.Record], dict[int, list[dict[str, Any]]]]:
    """Rows of a page read with CURRENT_PRICE_COLUMNS (a row per material and current price,
    in page order) as one row per material and each material's prices; with `whole` False,
    rows read with PRICE_SUMMARY_COLUMNS, whose prices hold material_id, supplier_id,
    unit_price, currency and supplier_name only."""
    materials: list[asyncpg.Record] = []
    prices: dict[int, list[dict[str, Any]]] = {}
    found: list[dict[str, Any]] = []
    last = None
    for row in rows:
        material_id = row["id"]
        if material_id != last:
            materials.append(row)
            last = material_id
            found = prices[material_id] = []
        if not whole:
            supplier_id = row["cp_supplier_id"]
            if supplier_id is not None:
                found.append({"material_id": material_id, "supplier_id": supplier_id,
                              "unit_price": row["cp_unit_price"], "currency": row["cp_currency"],
                              "supplier_name": row["cp_supplier_name"]})
            continue
        price_id = row["cp_id"]
        if price_id is not None:
            found.append({
                "id": price_id, "material_id": material_id, "supplier_id": row["cp_supplier_id"],
                "price_list_id": row["cp_price_list_id"], "unit_price": row["cp_unit_price"],
                "currency": row["cp_currency"], "calc_unit_code": row["cp_calc_unit_code"],
                "unit_calc_price": row["cp_unit_calc_price"], "buy_price": row["cp_buy_price"],
                "sale_price": row["cp_sale_price"], "stock": row["cp_stock"], "price_date": row["cp_price_date"],
                "valid_from": row["cp_valid_from"], "supplier_name": row["cp_supplier_name"],
            })
    return materials, prices


def material_columns(plan: MaterialReadPlan) -> str:
    """The columns of `materials m` that `plan` asks for."""
    columns = [MATERIAL_KEY_COLUMNS]
    if plan.details:
        columns.append(MATERIAL_DETAIL_COLUMNS)
    if plan.timestamps:
        columns.append(MATERIAL_TIME_COLUMNS)
    return ", ".join(columns)


def with_material_columns(page_sql: str, order: str, plan: MaterialReadPlan, *, scoped: bool = False,
                          inline: bool = False) -> str:
    """A page found by `page_sql` as rows named through `p.`, with the category and unit
    columns and, if `plan` asks, one row per current price (CURRENT_PRICE_COLUMNS); `order`
    restates the page's order over the result. With `inline`, `page_sql` already carries the
    materials' columns (material_columns); otherwise it yields (scope_id,) id and sort_key
    rows and the materials' columns are read last, for those rows only."""
    if inline:
        columns, source, alias = ["p.*"], f"({page_sql}) p", "p"
    else:
        scope = "p.scope_id, " if scoped else ""
        columns = [f"{scope}{material_columns(plan)}", "p.sort_key"]
        source, alias = f"({page_sql}) p JOIN materials m ON m.id = p.id", "m"
    joins = []
    if plan.category:
        columns.append(CATEGORY_COMPANION_COLUMNS)
        joins.append(f"LEFT JOIN categories c ON c.id = {alias}.category_id")
    if plan.unit:
        columns.append(UNIT_COMPANION_COLUMNS)
        joins.append(f"LEFT JOIN units u ON u.code = {alias}.unit_code")
    if plan.current_prices:
        columns.append(CURRENT_PRICE_COLUMNS if plan.whole_prices else PRICE_SUMMARY_COLUMNS)
        joins.append(CURRENT_PRICE_JOINS)
        order = f"{order}, {CURRENT_PRICE_ORDER}"
    return f"SELECT {', '.join(columns)} FROM {source} {' '.join(joins)} ORDER BY {order}"


# Sort expressions of MaterialOrderField; each has a matching (expr, id) index.
MATERIAL_SORT_KEYS = {
    "NAME": "m.name",
    "SKU": "coalesce(m.sku, '')",
    "CREATED_AT": "m.created_at",
    "UPDATED_AT": "m.updated_at",
}


@dataclass(frozen=True)
class MaterialFilterSpec:
    """MaterialFilter with ids already decoded; hashable so it can be part of a loader key."""

    category_id: int | None = None
    include_subcategories: bool = True
    unit: str | None = None
    supplier_id: int | None = None
    price_min: Decimal | None = None
    price_max: Decimal | None = None
    currency: str = "RUB"
    sku_prefix: str | None = None
    updated_since: datetime | None = None


def _filter_conditions(spec: MaterialFilterSpec, params: SqlParams, *, with_category: bool = True) -> list[str]:
    where = ["m.deleted_at IS NULL"]
    if spec.category_id is not None and with_category:
        p = params.add(spec.category_id)
        if spec.include_subcategories:
            where.append(f"m.category_id IN (SELECT c.id FROM categories c WHERE c.path @> ARRAY[{p}::bigint])")
        else:
            where.append(f"m.category_id = {p}")
    if spec.unit is not None:
        p = params.add(spec.unit.strip().lower())
        where.append(f"m.unit_code = (SELECT ua.unit_code FROM unit_aliases ua WHERE ua.alias = {p})")
    if spec.supplier_id is not None:
        p = params.add(spec.supplier_id)
        where.append(
            f"EXISTS (SELECT 1 FROM current_prices cp WHERE cp.material_id = m.id AND cp.supplier_id = {p})"
        )
    if spec.price_min is not None or spec.price_max is not None:
        cur = params.add(spec.currency.upper())
        best = f"(SELECT min(cp.unit_price) FROM current_prices cp WHERE cp.material_id = m.id AND cp.currency = {cur})"
        if spec.price_min is not None:
            where.append(f"{best} >= {params.add(spec.price_min)}")
        if spec.price_max is not None:
            where.append(f"{best} <= {params.add(spec.price_max)}")
    if spec.sku_prefix:
        where.append(f"m.sku LIKE {params.add(like_prefix(spec.sku_prefix))}")
    if spec.updated_since is not None:
        where.append(f"m.updated_at >= {params.add(spec.updated_since)}")
    return where


def material_page_query(
    spec: MaterialFilterSpec, page: PageSpec, *, scoped_to_categories: bool = False,
    plan: MaterialReadPlan = FULL_ROWS,
) -> tuple[str, list[Any]]:
    """SQL for one page of materials; with `scoped_to_categories`, one page per category in $1.

    A page of a category subtree in NAME order is read as a merge: the first `limit` rows of
    each category of the subtree from the (category_id, name, id) index, then the first `limit`
    of those. That costs at most limit x categories index entries however deep the page or
    large the subtree, where `category_id IN (subtree) ORDER BY name` walks the name index
    (or sorts the subtree) until it has found a page: 13 ms instead of 0.8 ms for a subtree
    of 48k materials at 100k.
    """
    sort_expr = MATERIAL_SORT_KEYS[page.sort]
    direction = "DESC" if page.descending else "ASC"
    order = f"ORDER BY {{0}}sort_key {direction}, {{0}}id {direction}"
    params = SqlParams([]) if scoped_to_categories else SqlParams()
    merge = page.sort == "NAME" and (
        scoped_to_categories or (spec.category_id is not None and spec.include_subcategories)
    )
    where = _filter_conditions(spec, params, with_category=not (merge and not scoped_to_categories))
    keyset = keyset_condition(sort_expr, "m.id", page, params)
    if keyset:
        where.append(keyset)
    # The page size is written into the statement, not passed as a parameter: with a
    # parameter PostgreSQL's generic plan cannot know the LIMIT is small, and chose plans
    # that cost 0.77 ms instead of 0.31 ms for a 50-row page. The size is an int checked
    # against the page cap; each size gets its own prepared statement.
    limit = str(int(page.limit))
    inner_order = f"ORDER BY {sort_expr} {direction}, m.id {direction} LIMIT {limit}"
    outer_order = f"p.sort_key {direction}, p.id {direction}"
    # Outside a merge the page is found on (id, sort key) alone, from indexes where it can be,
    # and the columns of its rows are read last, for those rows only (with_material_columns).
    # A merge of a page of the subtree (not per category) reads the columns in its per-category
    # scans: joining `materials` again by id for the 51 rows cost more (PostgreSQL: 0.45 against
    # 0.65-0.8 ms for W2's page with its current prices, vacuumed, leaf and root categories).
    inline = merge and not scoped_to_categories
    if not merge:
        if scoped_to_categories:
            where.append("m.category_id IN (SELECT c.id FROM categories c WHERE c.path @> ARRAY[s.scope_id])")
        select = f"SELECT m.id, {sort_expr} AS sort_key FROM materials m WHERE {' AND '.join(where)} {inner_order}"
    else:
        where.append("m.category_id = sc.id")
        columns = f"{material_columns(plan)}, {sort_expr} AS sort_key" if inline else f"m.id, {sort_expr} AS sort_key"
        per_category = f"SELECT {columns} FROM materials m WHERE {' AND '.join(where)} {inner_order}"
        root = "s.scope_id" if scoped_to_categories else f"{params.add(spec.category_id)}::bigint"
        select = (
            f"SELECT q.* FROM categories sc CROSS JOIN LATERAL ({per_category}) q "
            f"WHERE sc.path @> ARRAY[{root}] {order.format('q.')} LIMIT {limit}"
        )
    if not scoped_to_categories:
        return with_material_columns(select, outer_order, plan, inline=inline), params.values
    scoped = f"SELECT s.scope_id, p.* FROM unnest($1::bigint[]) AS s(scope_id) CROSS JOIN LATERAL ({select}) p"
    return with_material_columns(scoped, f"p.scope_id, {outer_order}", plan, scoped=True), params.values


def material_count_query(spec: MaterialFilterSpec, *, scoped_to_categories: bool = False) -> tuple[str, list[Any]]:
    params = SqlParams([]) if scoped_to_categories else SqlParams()
    where = _filter_conditions(spec, params)
    if not scoped_to_categories:
        return f"SELECT count(*) FROM materials m WHERE {' AND '.join(where)}", params.values
    where.append("m.category_id IN (SELECT c.id FROM categories c WHERE c.path @> ARRAY[s.scope_id])")
    sql = (
        "SELECT s.scope_id, (SELECT count(*) FROM materials m "
        f"WHERE {' AND '.join(where)}) AS total FROM unnest($1::bigint[]) AS s(scope_id)"
    )
    return sql, params.values


class CatalogReader:
    """Batched reads of the catalog tables."""

    def __init__(self, pg: PostgresBackend, read: PostgresBackend | None = None) -> None:
        self.pg = pg  # the primary (writers reach it through here)
        self.read = read or pg  # where these reads go: a DATABASE_READ_URL replica when configured

    async def materials_by_ids(self, ids: Sequence[int]) -> list[asyncpg.Record]:
        return await self.read.fetch(
            f"SELECT {MATERIAL_COLUMNS}, {MATERIAL_COMPANION_COLUMNS} FROM materials m "
            f"{MATERIAL_COMPANION_JOINS} WHERE m.id = ANY($1::bigint[])",
            ids,
        )

    async def materials_by_skus(self, skus: Sequence[str]) -> list[asyncpg.Record]:
        return await self.read.fetch(
            f"SELECT {MATERIAL_COLUMNS}, {MATERIAL_COMPANION_COLUMNS} FROM materials m "
            f"{MATERIAL_COMPANION_JOINS} "
            "WHERE m.sku = ANY($1::text[]) AND m.deleted_at IS NULL",
            skus,
        )

    async def material_page(
        self, spec: MaterialFilterSpec, page: PageSpec, plan: MaterialReadPlan = FULL_ROWS
    ) -> list[asyncpg.Record]:
        return (await self.material_page_and_prices(spec, page, plan))[0]

    async def material_page_and_prices(
        self, spec: MaterialFilterSpec, page: PageSpec, plan: MaterialReadPlan = FULL_ROWS
    ) -> tuple[list[asyncpg.Record], dict[int, list[dict[str, Any]]] | None]:
        """A page's rows, one per material, and, if `plan` reads them, each material's current
        prices (cheapest first, as `current_prices` rows with `supplier_name`; None otherwise)."""
        sql, args = material_page_query(spec, page, plan=plan)
        rows = await self.read.fetch(sql, *args)
        if not plan.current_prices:
            return rows, None
        return fold_current_prices(rows, plan.whole_prices)

    async def material_count(self, spec: MaterialFilterSpec) -> int:
        sql, args = material_count_query(spec)
        return int(await self.read.fetchval(sql, *args))

    async def material_pages_by_category(
        self, category_ids: Sequence[int], spec: MaterialFilterSpec, page: PageSpec
    ) -> list[asyncpg.Record]:
        sql, args = material_page_query(spec, page, scoped_to_categories=True)
        args[0] = list(category_ids)
        return await self.read.fetch(sql, *args)

    async def material_counts_by_category(
        self, category_ids: Sequence[int], spec: MaterialFilterSpec
    ) -> list[asyncpg.Record]:
        sql, args = material_count_query(spec, scoped_to_categories=True)
        args[0] = list(category_ids)
        return await self.read.fetch(sql, *args)

    async def categories_by_ids(self, ids: Sequence[int]) -> list[asyncpg.Record]:
        return await self.read.fetch("SELECT id, parent_id, name FROM categories WHERE id = ANY($1::bigint[])", ids)

    async def categories_by_parent_ids(self, parent_ids: Sequence[int]) -> list[asyncpg.Record]:
        return await self.read.fetch(
            "SELECT id, parent_id, name FROM categories WHERE parent_id = ANY($1::bigint[]) ORDER BY name, id",
            parent_ids,
        )

    async def root_categories(self) -> list[asyncpg.Record]:
        return await self.read.fetch("SELECT id, parent_id, name FROM categories WHERE parent_id IS NULL ORDER BY name, id")

    async def units_by_codes(self, codes: Sequence[str]) -> list[asyncpg.Record]:
        return await self.read.fetch("SELECT code, name, aliases FROM units WHERE code = ANY($1::text[])", codes)

    async def all_units(self) -> list[asyncpg.Record]:
        return await self.read.fetch("SELECT code, name, aliases FROM units ORDER BY code")

    async def unit_codes_by_aliases(self, aliases: Sequence[str]) -> list[asyncpg.Record]:
        return await self.read.fetch(
            "SELECT alias, unit_code FROM unit_aliases WHERE alias = ANY($1::text[])", aliases
        )

    async def suppliers_by_ids(self, ids: Sequence[int]) -> list[asyncpg.Record]:
        return await self.read.fetch("SELECT id, name FROM suppliers WHERE id = ANY($1::bigint[])", ids)

    async def supplier_page(self, page: PageSpec) -> list[asyncpg.Record]:
        params = SqlParams()
        keyset = keyset_condition("name", "id", page, params)
        where = f"WHERE {keyset}" if keyset else ""
        limit = str(int(page.limit))  # literal, not a parameter: see backends.catalog.material_page_query
        direction = "DESC" if page.descending else "ASC"
        return await self.read.fetch(
            f"SELECT id, name, name AS sort_key FROM suppliers {where} "
            f"ORDER BY name {direction}, id {direction} LIMIT {limit}",
            *params.values,
        )
