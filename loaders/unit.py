"""Unit loader by canonical code."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from strawberry.dataloader import DataLoader

from backends.cache import CacheView
from backends.catalog import CatalogReader
from loaders.base import KnownRows, rows_in_key_order
from loaders.cached import through_cache, unit_tags


class UnitByCodeLoader(KnownRows):
    def __init__(self, catalog: CatalogReader, cache: CacheView | None = None) -> None:
        self.catalog = catalog
        self.shared = cache  # not `cache`: DataLoader.cache is its per-request switch
        super().__init__(load_fn=self._load)

    async def _load(self, codes: Sequence[str]) -> list[asyncpg.Record | None]:
        return await through_cache(self.shared, "unit", codes, self._read, unit_tags)

    async def _read(self, codes: list[str]) -> list[asyncpg.Record | None]:
        return rows_in_key_order(codes, await self.catalog.units_by_codes(codes), "code")


class UnitCodeByAliasLoader(DataLoader[str, str | None]):
    """Canonical unit code for any spelling of a unit (lower-cased), None when unknown."""

    def __init__(self, catalog: CatalogReader) -> None:
        self.catalog = catalog
        super().__init__(load_fn=self._load)

    async def _load(self, aliases: Sequence[str]) -> list[str | None]:
        rows = await self.catalog.unit_codes_by_aliases([a.strip().lower() for a in aliases])
        found = {r["alias"]: r["unit_code"] for r in rows}
        return [found.get(a.strip().lower()) for a in aliases]
