"""Material loaders: by id, by SKU, and pages/counts of materials per category."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from strawberry.dataloader import DataLoader

from backends.cache import CacheView
from backends.catalog import CatalogReader, MaterialFilterSpec
from backends.sql import PageSpec
from loaders.base import Companion, prime_companions, rows_in_key_order, scoped_pages
from loaders.cached import material_tags, through_cache


class MaterialByIdLoader(DataLoader[int, asyncpg.Record | None]):
    """Materials by id, soft-deleted ones included (price history still points at them)."""

    def __init__(self, catalog: CatalogReader, companions: Sequence[Companion] = (),
                 cache: CacheView | None = None) -> None:
        self.catalog = catalog
        self.companions = companions
        self.shared = cache  # not `cache`: DataLoader.cache is its per-request switch
        super().__init__(load_fn=self._load)

    async def _load(self, ids: Sequence[int]) -> list[asyncpg.Record | None]:
        rows = await through_cache(self.shared, "material", ids, self._read, material_tags)
        prime_companions([r for r in rows if r is not None], self.companions)
        return rows

    async def _read(self, ids: list[int]) -> list[asyncpg.Record | None]:
        return rows_in_key_order(ids, await self.catalog.materials_by_ids(ids), "id")


class MaterialBySkuLoader(DataLoader[str, asyncpg.Record | None]):
    """Live materials by exact SKU."""

    def __init__(self, catalog: CatalogReader, companions: Sequence[Companion] = (),
                 cache: CacheView | None = None) -> None:
        self.catalog = catalog
        self.companions = companions
        self.shared = cache  # not `cache`: DataLoader.cache is its per-request switch
        super().__init__(load_fn=self._load)

    async def _load(self, skus: Sequence[str]) -> list[asyncpg.Record | None]:
        rows = await through_cache(self.shared, "material-by-sku", skus, self._read, material_tags)
        prime_companions([r for r in rows if r is not None], self.companions)
        return rows

    async def _read(self, skus: list[str]) -> list[asyncpg.Record | None]:
        return rows_in_key_order(skus, await self.catalog.materials_by_skus(skus), "sku")


PageArgs = tuple[MaterialFilterSpec, PageSpec]


class MaterialsByCategoryLoader(DataLoader[tuple[int, PageArgs], list[asyncpg.Record]]):
    """Category.materials pages: (category id, (filter, page)) -> rows, one statement per level."""

    def __init__(self, catalog: CatalogReader, companions: Sequence[Companion] = ()) -> None:
        self.catalog = catalog
        self.companions = companions
        super().__init__(load_fn=self._load)

    async def _load(self, keys: Sequence[tuple[int, PageArgs]]) -> list[list[asyncpg.Record]]:
        async def fetch(scopes: list[int], args: PageArgs) -> list[asyncpg.Record]:
            rows = await self.catalog.material_pages_by_category(scopes, *args)
            prime_companions(rows, self.companions)
            return rows

        return await scoped_pages(keys, fetch)


class MaterialCountByCategoryLoader(DataLoader[tuple[int, MaterialFilterSpec], int]):
    """Category.materials totalCount: (category id, filter) -> count."""

    def __init__(self, catalog: CatalogReader) -> None:
        self.catalog = catalog
        super().__init__(load_fn=self._load)

    async def _load(self, keys: Sequence[tuple[int, MaterialFilterSpec]]) -> list[int]:
        async def fetch(scopes: list[int], spec: MaterialFilterSpec) -> list[asyncpg.Record]:
            return await self.catalog.material_counts_by_category(scopes, spec)

        pages = await scoped_pages(keys, fetch)
        return [rows[0]["total"] if rows else 0 for rows in pages]
