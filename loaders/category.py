"""Category loaders: by id and children by parent id."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from strawberry.dataloader import DataLoader

from backends.cache import CacheView
from backends.catalog import CatalogReader
from loaders.base import KnownRows, groups_in_key_order, rows_in_key_order
from loaders.cached import category_list_tags, category_tags, through_cache


class CategoryByIdLoader(KnownRows):
    def __init__(self, catalog: CatalogReader, cache: CacheView | None = None) -> None:
        self.catalog = catalog
        self.shared = cache  # not `cache`: DataLoader.cache is its per-request switch
        super().__init__(load_fn=self._load)

    async def _load(self, ids: Sequence[int]) -> list[asyncpg.Record | None]:
        return await through_cache(self.shared, "category", ids, self._read, category_tags)

    async def _read(self, ids: list[int]) -> list[asyncpg.Record | None]:
        return rows_in_key_order(ids, await self.catalog.categories_by_ids(ids), "id")


class CategoriesByParentLoader(DataLoader[int, list[asyncpg.Record]]):
    """Children of each category, by name."""

    def __init__(self, catalog: CatalogReader, cache: CacheView | None = None) -> None:
        self.catalog = catalog
        self.shared = cache  # not `cache`: DataLoader.cache is its per-request switch
        super().__init__(load_fn=self._load)

    async def _load(self, parent_ids: Sequence[int]) -> list[list[asyncpg.Record]]:
        return await through_cache(self.shared, "category-children", parent_ids, self._read, category_list_tags)

    async def _read(self, parent_ids: list[int]) -> list[list[asyncpg.Record]]:
        rows = await self.catalog.categories_by_parent_ids(parent_ids)
        return groups_in_key_order(parent_ids, rows, "parent_id")
