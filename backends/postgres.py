"""PostgreSQL backend: one asyncpg pool with an explicit lifecycle and round-trip counting."""

from __future__ import annotations

import asyncio
import contextvars
import enum
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from backends.errors import BackendStateError, BackendUnavailable


@dataclass
class QueryStats:
    """SQL round trips made on behalf of one unit of work (a GraphQL operation)."""

    round_trips: int = 0
    statements: list[str] = field(default_factory=list)
    keep_statements: bool = False


# The QueryStats of the operation running in this context. The object is shared, not
# copied: asyncpg runs its query loggers through loop.call_soon with a copy of the
# caller's context, and DataLoader batches run in tasks whose context was copied from the
# resolver that scheduled them; both still point at the same QueryStats instance.
_current_stats: contextvars.ContextVar[QueryStats | None] = contextvars.ContextVar(
    "sql_query_stats", default=None
)


def track_queries(*, keep_statements: bool = False) -> QueryStats:
    """Starts counting the round trips made from the current context; returns the counter."""
    stats = QueryStats(keep_statements=keep_statements)
    _current_stats.set(stats)
    return stats


def current_query_stats() -> QueryStats | None:
    """The counter the current context counts into (the latest `track_queries()` here), if any."""
    return _current_stats.get()


def _count_round_trip(record: Any) -> None:
    stats = _current_stats.get()
    if stats is not None:
        stats.round_trips += 1
        if stats.keep_statements:
            stats.statements.append(record.query)


class PoolState(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.TooManyConnectionsError,
)


class PostgresBackend:
    """An asyncpg pool: `await open()`, then queries, then `await close()` (or `terminate()`)."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float = 30.0,
        max_inactive_connection_lifetime: float = 300.0,
        connect_timeout: float = 60.0,
    ) -> None:
        if not dsn:
            raise ValueError("PostgresBackend needs a DSN (postgresql://...)")
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(
                f"pool sizes must satisfy 0 <= min_size <= max_size and max_size >= 1 "
                f"(got min_size={min_size}, max_size={max_size})"
            )
        self.dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._command_timeout = command_timeout
        self._max_inactive = max_inactive_connection_lifetime
        # A server that accepts the connection but never answers (a hung host, a black-holed
        # route) costs a caller at most this long before BackendUnavailable.
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self.state = PoolState.UNOPENED

    async def open(self) -> PostgresBackend:
        if self.state is not PoolState.UNOPENED:
            raise BackendStateError(f"PostgresBackend.open() called on a pool that is {self.state.value}")
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                command_timeout=self._command_timeout,
                max_inactive_connection_lifetime=self._max_inactive,
                timeout=self._connect_timeout,
                init=self._init_connection,
                reset=self._reset_connection,
            )
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        self.state = PoolState.OPEN
        return self

    async def close(self) -> None:
        """Waits for checked-out connections to be released, then closes them all."""
        if self._pool is not None and self.state is PoolState.OPEN:
            await self._pool.close()
        self.state = PoolState.CLOSED

    def terminate(self) -> None:
        """Closes every connection at once, without waiting for queries to finish."""
        if self._pool is not None and self.state is PoolState.OPEN:
            self._pool.terminate()
        self.state = PoolState.CLOSED

    async def __aenter__(self) -> PostgresBackend:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @staticmethod
    async def _init_connection(conn: asyncpg.Connection) -> None:
        await conn.set_type_codec("jsonb", encoder=_json_text, decoder=orjson.loads, schema="pg_catalog")
        # asyncpg introspects bigint[] (the `= ANY($1::bigint[])` of every batch) on first
        # use; doing it here keeps that cost out of the first requests a connection serves.
        await conn.fetchval("SELECT NULL::bigint[]")
        # Every statement here is a parameterised keyset or key lookup whose best plan does not
        # depend on the values: plan once per connection. Left to choose, PostgreSQL kept
        # planning the page query afresh (custom plans), 0.4 ms of its 0.87 ms per execution.
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.add_query_logger(_count_round_trip)

    @staticmethod
    async def _reset_connection(conn: asyncpg.Connection) -> None:
        """Replaces asyncpg's reset query, which costs one extra round trip per release.

        asyncpg still rolls back an unfinished transaction and drops listeners before
        calling this. The price: code must not leave session state behind on a pooled
        connection (use SET LOCAL and transaction-level advisory locks, or unlock in
        `finally`, as the migrator does).
        """

    @property
    def pool(self) -> asyncpg.Pool:
        if self.state is not PoolState.OPEN or self._pool is None:
            raise BackendStateError(f"PostgresBackend used while {self.state.value}; call open() first")
        return self._pool

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            return await self.pool.fetch(sql, *args)
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"PostgreSQL unavailable: {_describe(exc)}") from exc

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        try:
            return await self.pool.fetchrow(sql, *args)
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"PostgreSQL unavailable: {_describe(exc)}") from exc

    async def fetchval(self, sql: str, *args: Any) -> Any:
        try:
            return await self.pool.fetchval(sql, *args)
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"PostgreSQL unavailable: {_describe(exc)}") from exc

    async def execute(self, sql: str, *args: Any) -> str:
        try:
            return await self.pool.execute(sql, *args)
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"PostgreSQL unavailable: {_describe(exc)}") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside one transaction: committed on exit, rolled back on error."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                yield conn
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"PostgreSQL unavailable: {_describe(exc)}") from exc

    def pool_usage(self) -> dict[str, int]:
        """Connections open, idle, in use, the maximum, and acquires waiting for one."""
        pool = self.pool
        size, idle = pool.get_size(), pool.get_idle_size()
        # asyncpg keeps no count of waiting acquires; its queue's waiters are them (private,
        # so read defensively: 0 if a later asyncpg names it otherwise).
        waiters = getattr(getattr(pool, "_queue", None), "_getters", ())
        waiting = sum(1 for w in waiters if not w.done())
        return {"size": size, "idle": idle, "in_use": size - idle, "max": pool.get_max_size(), "waiting": waiting}


async def copy_records(
    conn: asyncpg.Connection, table: str, columns: Sequence[str], records: Sequence[Sequence[Any]]
) -> None:
    """COPY rows into a table (binary protocol): the bulk path for seeds and imports."""
    await conn.copy_records_to_table(table, columns=list(columns), records=records)


def _json_text(value: object) -> str:
    return orjson.dumps(value).decode()


def _describe(exc: BaseException) -> str:
    """The error's text, or its kind when it has none (a TimeoutError says nothing)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within the statement timeout ({exc or 'timed out'})"
    return str(exc) or type(exc).__name__
