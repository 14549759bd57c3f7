"""The typed context every resolver reads through `strawberry.Info[Context]`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backends.api_keys import Principal
from backends.cache import CacheView
from backends.catalog import CatalogReader
from backends.prices import PriceReader
from backends.search import SearchService
from loaders.registry import RequestLoaders
from resolvers.admin import AdminServices

if TYPE_CHECKING:
    from resolvers.subscriptions import Subscriptions


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
    # A websocket's: resolves its key again before each operation (middleware.graphql_view)
    refresh_principal: Callable[[], Awaitable[None]] | None = None

    # Issue 6: subscriptions (None: not served here) and fresh loaders for each event a
    # long-lived subscription sends (a websocket's context lives as long as its connection).
    subscriptions: Subscriptions | None = None
    # () -> (loaders, cache view, the outbox generation they read at, None if unknown)
    renew_loaders: Callable[[], tuple[RequestLoaders, CacheView | None, int | None]] | None = None
    renewed_through: int | None = None
    # Set by schema.execution.CompiledExecutionContext: resolvers may hand it values it
    # completes as they are (schema.page_render.Rendered).
    compiled_completion: bool = False

    @property
    def actor(self) -> str:
        """The audit log's name for the caller: the API key's prefix, else "anonymous"."""
        return self.principal.actor if self.principal is not None else "anonymous"

    def renew(self, event_id: int | None = None) -> None:
        """New DataLoaders (and cache generation) before a subscription sends its next result,
        so it never answers from what the connection read minutes ago. With `event_id`, only
        when the event is newer than the generation the current loaders read at: the events
        of one commit, sent one after another, share one set of loaders."""
        if self.renew_loaders is None:
            return
        if event_id is not None and self.renewed_through is not None and event_id <= self.renewed_through:
            return
        self.loaders, self.cache, self.renewed_through = self.renew_loaders()

    def depends_on(self, *tags: str) -> None:
        """Records what a read outside the cached loaders depended on (the response cache's tags)."""
        if self.cache is not None:
            self.cache.note(*tags)
