"""Schema extension: counts SQL round trips per operation and, in debug, reports them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from strawberry.extensions import SchemaExtension

from backends.postgres import QueryStats, track_queries


class QueryStatsExtension(SchemaExtension):
    """Adds `extensions.queryStats.sqlRoundTrips` to every response (enabled with DEBUG=1)."""

    stats: QueryStats | None = None

    def on_operation(self) -> Iterator[None]:
        # Set in the operation's own context before any resolver runs, so every DataLoader
        # batch task (its context is copied from a resolver's) counts into this object.
        self.stats = track_queries()
        yield

    def get_results(self) -> dict[str, Any]:
        if self.stats is None:
            return {}
        return {"queryStats": {"sqlRoundTrips": self.stats.round_trips}}
