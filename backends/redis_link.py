"""Redis for the cache: a client that steps aside while the server is unreachable.

Callers treat Redis as optional: every failure is translated once, here, into
`RedisUnavailable`. Calls go through a circuit breaker (backends.breakers): after
`threshold` failures in a row (by default 1) calls fail at once for `retry_after` seconds
instead of waiting for a timeout on every request. The first calls after that try the
server again, so a Redis that comes back is used again without a restart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from backends.breakers import Breaker, CircuitOpen
from backends.errors import BackendStateError, BackendUnavailable

T = TypeVar("T")


class RedisUnavailable(BackendUnavailable):
    """Redis did not answer (down, unreachable, or skipped while recently down)."""


class RedisLink:
    """`open()`, then `run(op)` for each command or pipeline, then `close()`."""

    def __init__(self, url: str, *, timeout: float = 0.5, retry_after: float = 1.0,
                 breaker: Breaker | None = None) -> None:
        if not url:
            raise ValueError("RedisLink needs a URL (redis://host:port/db)")
        if timeout <= 0 or retry_after <= 0:
            raise ValueError(f"timeout and retry_after must be > 0 (got {timeout}, {retry_after})")
        self.url = url
        self._timeout = timeout
        self.breaker = breaker or Breaker("redis", threshold=1, reset_s=retry_after)
        self._client: aioredis.Redis | None = None
        self.failures = 0  # how many calls found Redis unavailable

    async def open(self) -> RedisLink:
        if self._client is not None:
            raise BackendStateError("RedisLink.open() called twice")
        # No I/O here: the pool connects on the first command, so a Redis that is down at
        # start-up only means the cache starts on L1 alone.
        self._client = aioredis.from_url(self.url, socket_timeout=self._timeout,
                                         socket_connect_timeout=self._timeout, health_check_interval=0)
        return self

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def available(self) -> bool:
        """False while Redis is being skipped after failures (its circuit is open)."""
        return self._client is not None and self.breaker.allows_calls

    async def run(self, op: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        client = self._client
        if client is None:
            raise BackendStateError("RedisLink used before open() or after close()")
        try:
            return await self.breaker.call(lambda: self._translated(op, client))
        except CircuitOpen as exc:
            raise RedisUnavailable(f"Redis was unavailable moments ago; skipped ({exc})") from None

    async def _translated(self, op: Callable[[aioredis.Redis], Awaitable[T]], client: aioredis.Redis) -> T:
        try:
            return await op(client)
        except (RedisError, OSError) as exc:
            self.failures += 1
            raise RedisUnavailable(f"Redis unavailable: {exc or type(exc).__name__}") from exc

    async def ping(self) -> None:
        """One PING straight to the server, past the breaker (health checks see the truth)."""
        if self._client is None:
            raise BackendStateError("RedisLink used before open() or after close()")
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(f"Redis unavailable: {exc or type(exc).__name__}") from exc

    async def pipeline(self, build: Callable[[Any], None]) -> list[Any]:
        """Runs the commands `build(pipe)` queues in one round trip (no MULTI)."""

        async def op(client: aioredis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            build(pipe)
            return await pipe.execute()

        return await self.run(op)
