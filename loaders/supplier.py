"""Supplier loader by id."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from strawberry.dataloader import DataLoader

from backends.catalog import CatalogReader
from loaders.base import rows_in_key_order


class SupplierByIdLoader(DataLoader[int, asyncpg.Record | None]):
    def __init__(self, catalog: CatalogReader) -> None:
        self.catalog = catalog
        super().__init__(load_fn=self._load)

    async def _load(self, ids: Sequence[int]) -> list[asyncpg.Record | None]:
        return rows_in_key_order(ids, await self.catalog.suppliers_by_ids(list(ids)), "id")
