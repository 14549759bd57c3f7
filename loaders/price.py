"""Price loaders: current prices, history pages, price lists and their prices."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from strawberry.dataloader import DataLoader

from backends.cache import CacheView
from backends.prices import HistorySpec, PriceReader
from backends.sql import PageSpec
from loaders.base import (
    Companion,
    KnownRows,
    groups_in_key_order,
    prime_companions,
    rows_in_key_order,
    scoped_pages,
)
from loaders.cached import current_prices_tags, price_list_tags, through_cache


class CurrentPricesByMaterialLoader(KnownRows):
    """The latest price of every supplier for each material, cheapest first."""

    def __init__(self, prices: PriceReader, companions: Sequence[Companion] = (),
                 cache: CacheView | None = None) -> None:
        self.prices = prices
        self.companions = companions
        self.shared = cache  # not `cache`: DataLoader.cache is its per-request switch
        super().__init__(load_fn=self._load)

    async def _load(self, material_ids: Sequence[int]) -> list[list[asyncpg.Record]]:
        groups = await through_cache(self.shared, "current-prices", material_ids, self._read, current_prices_tags)
        prime_companions([row for rows in groups for row in rows], self.companions)
        return groups

    async def _read(self, material_ids: list[int]) -> list[list[asyncpg.Record]]:
        rows = await self.prices.current_prices_by_material_ids(material_ids)
        return groups_in_key_order(material_ids, rows, "material_id")


HistoryArgs = tuple[HistorySpec, PageSpec]


class PriceHistoryByMaterialLoader(DataLoader[tuple[int, HistoryArgs], list[asyncpg.Record]]):
    """Material.priceHistory pages: (material id, (filters, page)) -> rows, newest first."""

    def __init__(self, prices: PriceReader, companions: Sequence[Companion] = ()) -> None:
        self.prices = prices
        self.companions = companions
        super().__init__(load_fn=self._load)

    async def _load(self, keys: Sequence[tuple[int, HistoryArgs]]) -> list[list[asyncpg.Record]]:
        async def fetch(scopes: list[int], args: HistoryArgs) -> Sequence[asyncpg.Record]:
            rows = await self.prices.history_pages_by_material_ids(scopes, *args)
            prime_companions(rows, self.companions)
            return rows

        return await scoped_pages(keys, fetch)


class PricesByPriceListLoader(DataLoader[tuple[int, PageSpec], list[asyncpg.Record]]):
    """PriceList.prices pages: (price list id, page) -> rows."""

    def __init__(self, prices: PriceReader) -> None:
        self.prices = prices
        super().__init__(load_fn=self._load)

    async def _load(self, keys: Sequence[tuple[int, PageSpec]]) -> list[list[asyncpg.Record]]:
        return await scoped_pages(keys, self.prices.price_pages_by_price_list_ids)


class PriceListByIdLoader(DataLoader[int, asyncpg.Record | None]):
    def __init__(self, prices: PriceReader, cache: CacheView | None = None) -> None:
        self.prices = prices
        self.shared = cache  # not `cache`: DataLoader.cache is its per-request switch
        super().__init__(load_fn=self._load)

    async def _load(self, ids: Sequence[int]) -> list[asyncpg.Record | None]:
        return await through_cache(self.shared, "price-list", ids, self._read, price_list_tags)

    async def _read(self, ids: list[int]) -> list[asyncpg.Record | None]:
        return rows_in_key_order(ids, await self.prices.price_lists_by_ids(ids), "id")


class PriceListsBySupplierLoader(DataLoader[tuple[int, PageSpec], list[asyncpg.Record]]):
    """Supplier.priceLists pages: (supplier id, page) -> rows, newest version first."""

    def __init__(self, prices: PriceReader) -> None:
        self.prices = prices
        super().__init__(load_fn=self._load)

    async def _load(self, keys: Sequence[tuple[int, PageSpec]]) -> list[list[asyncpg.Record]]:
        return await scoped_pages(keys, self.prices.price_list_pages_by_supplier_ids)
