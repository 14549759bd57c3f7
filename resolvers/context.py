"""The typed context every resolver reads through `strawberry.Info[Context]`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backends.api_keys import Principal
from backends.cache import CacheView
from backends.catalog import CatalogReader
from backends.prices import PriceReader
from backends.search import SearchService
from loaders.registry import RequestLoaders
from resolvers.admin import AdminServices


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
    principal: Principal | None = None  # who is calling (middleware.auth); None only outside a request
    connection_params: Any = None  # a websocket's connection_init payload (Strawberry sets it)
    admin: AdminServices | None = None  # key management, audit, allow-list (None: not served)

    @property
    def actor(self) -> str:
        """The audit log's name for the caller: the API key's prefix, else "anonymous"."""
        return self.principal.actor if self.principal is not None else "anonymous"

    def depends_on(self, *tags: str) -> None:
        """Records what a read outside the cached loaders depended on (the response cache's tags)."""
        if self.cache is not None:
            self.cache.note(*tags)
