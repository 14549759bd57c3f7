"""The typed context every resolver reads through `strawberry.Info[Context]`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backends.cache import CacheView
from backends.catalog import CatalogReader
from backends.prices import PriceReader
from backends.search import SearchService
from loaders.registry import RequestLoaders


@dataclass
class Context:
    """Per-request state: the request, its DataLoaders, and the readers behind them."""

    request: Any
    response: Any
    loaders: RequestLoaders
    catalog: CatalogReader
    prices: PriceReader
    max_page_size: int = 100
    search: SearchService | None = None
    cache: CacheView | None = None  # None: every read goes to PostgreSQL

    def depends_on(self, *tags: str) -> None:
        """Records what a read outside the cached loaders depended on (the response cache's tags)."""
        if self.cache is not None:
            self.cache.note(*tags)
