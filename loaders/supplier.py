"""Supplier loader by id."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from backends.cache import CacheView
from backends.catalog import CatalogReader
from loaders.base import KnownRows, rows_in_key_order
from loaders.cached import supplier_tags, through_cache


class SupplierByIdLoader(KnownRows):
    def __init__(self, catalog: CatalogReader, cache: CacheView | None = None) -> None:
        self.catalog = catalog
        self.shared = cache  # not `cache`: DataLoader.cache is its per-request switch
        super().__init__(load_fn=self._load)

    async def _load(self, ids: Sequence[int]) -> list[asyncpg.Record | None]:
        return await through_cache(self.shared, "supplier", ids, self._read, supplier_tags)

    async def _read(self, ids: list[int]) -> list[asyncpg.Record | None]:
        return rows_in_key_order(ids, await self.catalog.suppliers_by_ids(ids), "id")
