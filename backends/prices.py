"""Price reads: current prices, price history pages, price lists and their prices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from backends.postgres import PostgresBackend
from backends.sql import PageSpec, SqlParams, keyset_condition

PRICE_COLUMNS = (
    "p.id, p.material_id, p.supplier_id, p.price_list_id, p.unit_price, p.currency, p.calc_unit_code, "
    "p.unit_calc_price, p.buy_price, p.sale_price, p.stock, p.price_date, p.valid_from"
)
# The supplier of each price, read with it (loaders.base.prime_companions builds its row).
# A join, not a correlated subquery: PostgreSQL ran the subquery as a scan of `suppliers`
# per price row, which cost three times the rest of the statement.
SUPPLIER_COMPANION = "sp.name AS supplier_name"
SUPPLIER_JOIN = "LEFT JOIN suppliers sp ON sp.id = {p}.supplier_id"
PRICE_LIST_COLUMNS = (
    "pl.id, pl.supplier_id, pl.version, pl.status, pl.filename, pl.checksum, pl.uploaded_at, "
    "pl.effective_at, pl.row_count, pl.rejected_count, pl.archived_at"
)


@dataclass(frozen=True)
class HistorySpec:
    """Material.priceHistory arguments with ids decoded."""

    supplier_id: int | None = None
    since: datetime | None = None


class PriceReader:
    """Batched reads of prices and price lists."""

    def __init__(self, pg: PostgresBackend, read: PostgresBackend | None = None) -> None:
        self.pg = pg  # the primary (writers reach it through here)
        self.read = read or pg  # where these reads go: a DATABASE_READ_URL replica when configured

    async def current_prices_by_material_ids(self, material_ids: Sequence[int]) -> list[asyncpg.Record]:
        # Cheapest first: bestPrice is then the first row of the right currency.
        return await self.read.fetch(
            f"SELECT {PRICE_COLUMNS.replace('p.id', 'p.price_id AS id')}, {SUPPLIER_COMPANION} FROM current_prices p "
            f"{SUPPLIER_JOIN.format(p='p')} "
            "WHERE p.material_id = ANY($1::bigint[]) ORDER BY p.material_id, p.unit_price, p.supplier_id",
            material_ids,
        )

    async def history_pages_by_material_ids(
        self, material_ids: Sequence[int], spec: HistorySpec, page: PageSpec
    ) -> list[asyncpg.Record]:
        """Newest first, `page.limit` rows per material, one statement for all materials."""
        params = SqlParams(list(material_ids))
        where = ["p.material_id = s.material_id"]
        if spec.supplier_id is not None:
            where.append(f"p.supplier_id = {params.add(spec.supplier_id)}")
        if spec.since is not None:
            where.append(f"p.valid_from >= {params.add(spec.since)}")
        keyset = keyset_condition("p.valid_from", "p.id", page, params)
        if keyset:
            where.append(keyset)
        limit = str(int(page.limit))  # literal, not a parameter: see backends.catalog.material_page_query
        sql = (
            f"SELECT s.material_id AS scope_id, h.*, {SUPPLIER_COMPANION} "
            "FROM unnest($1::bigint[]) WITH ORDINALITY AS s(material_id, ord) "
            f"CROSS JOIN LATERAL (SELECT {PRICE_COLUMNS}, p.valid_from AS sort_key FROM price_history p "
            f"WHERE {' AND '.join(where)} ORDER BY p.valid_from DESC, p.id DESC LIMIT {limit}) h "
            f"{SUPPLIER_JOIN.format(p='h')} ORDER BY s.ord, h.valid_from DESC, h.id DESC"
        )
        return await self.read.fetch(sql, *params.values)

    async def price_pages_by_price_list_ids(
        self, price_list_ids: Sequence[int], page: PageSpec
    ) -> list[asyncpg.Record]:
        """The prices a list brought, in insertion order, `page.limit` rows per list."""
        params = SqlParams(list(price_list_ids))
        # All prices of a list share its effective_at: naming it lets PostgreSQL prune the
        # monthly partitions instead of probing every one.
        where = ["p.price_list_id = pl.id", "p.valid_from = pl.effective_at"]
        keyset = keyset_condition("p.id", "p.id", page, params)
        if keyset:
            where.append(keyset)
        limit = str(int(page.limit))  # literal, not a parameter: see backends.catalog.material_page_query
        sql = (
            "SELECT pl.id AS scope_id, h.* FROM price_lists pl "
            f"CROSS JOIN LATERAL (SELECT {PRICE_COLUMNS}, p.id AS sort_key FROM price_history p "
            f"WHERE {' AND '.join(where)} ORDER BY p.id LIMIT {limit}) h "
            "WHERE pl.id = ANY($1::bigint[])"
        )
        return await self.read.fetch(sql, *params.values)

    async def price_lists_by_ids(self, ids: Sequence[int]) -> list[asyncpg.Record]:
        return await self.read.fetch(
            f"SELECT {PRICE_LIST_COLUMNS} FROM price_lists pl WHERE pl.id = ANY($1::bigint[])", ids
        )

    async def price_list_pages_by_supplier_ids(
        self, supplier_ids: Sequence[int], page: PageSpec
    ) -> list[asyncpg.Record]:
        """Newest version first, `page.limit` lists per supplier."""
        params = SqlParams(list(supplier_ids))
        where = ["pl.supplier_id = s.supplier_id"]
        keyset = keyset_condition("pl.version", "pl.id", page, params)
        if keyset:
            where.append(keyset)
        limit = str(int(page.limit))  # literal, not a parameter: see backends.catalog.material_page_query
        sql = (
            "SELECT s.supplier_id AS scope_id, h.* FROM unnest($1::bigint[]) AS s(supplier_id) "
            f"CROSS JOIN LATERAL (SELECT {PRICE_LIST_COLUMNS}, pl.version AS sort_key FROM price_lists pl "
            f"WHERE {' AND '.join(where)} ORDER BY pl.version DESC, pl.id DESC LIMIT {limit}) h"
        )
        return await self.read.fetch(sql, *params.values)

    async def rejected_rows(self, price_list_id: int, after_line: int | None, limit: int) -> list[asyncpg.Record]:
        return await self.read.fetch(
            'SELECT line, "column", message, raw FROM price_list_rejected_rows '
            "WHERE price_list_id = $1 AND line > coalesce($2, 0) ORDER BY line LIMIT $3",
            price_list_id,
            after_line,
            limit,
        )
