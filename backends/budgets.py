"""Cost budgets per principal, counted atomically in Redis by the `limits` library.

Every instance debits the same Redis counter (a fixed window that starts at the first debit:
`limits`' INCRBY + EXPIRE script), so N instances share one budget. While Redis is
unreachable, each instance counts alone in memory against its share of the budget
(budget / INSTANCES) and keeps serving; it tries Redis again `retry_after` seconds later.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Debit:
    """The outcome of one debit: admitted or not, what is left, when the window resets."""

    allowed: bool
    remaining: int
    budget: int
    reset_s: int  # seconds until the window starts over (Retry-After when refused)
    shared: bool  # counted in Redis (False: this instance's fallback share)


def parse_rate(text: str, what: str) -> RateLimitItem:
    """A rate such as "20000/minute" or "100 per 10 seconds"; ValueError naming `what` otherwise."""
    try:
        return parse(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a rate (write it like 20000/minute)") from None


class Budgets:
    """`debit(identity, item, cost)` against Redis (when given) or this instance's counters."""

    def __init__(self, redis_url: str | None, *, prefix: str, instances: int = 1, timeout: float = 0.25,
                 retry_after: float = 2.0) -> None:
        if instances < 1:
            raise ValueError(f"instances must be at least 1 (got {instances})")
        self.instances = instances
        self.retry_after = retry_after
        self._shared: FixedWindowRateLimiter | None = None
        if redis_url:
            # redis.asyncio under limits (implementation="redispy"); no client-side retries: a
            # Redis that does not answer within `timeout` sends this request to the fallback.
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            storage = RedisStorage("async+" + redis_url, implementation="redispy", key_prefix=f"{prefix}:limits",
                                   wrap_exceptions=True, socket_timeout=timeout, socket_connect_timeout=timeout,
                                   retry=Retry(NoBackoff(), 0))
            self._shared = FixedWindowRateLimiter(storage)
        self._local = FixedWindowRateLimiter(MemoryStorage())
        self._down_until = 0.0
        self.fallbacks = 0  # debits counted locally because Redis did not answer

    @property
    def shared(self) -> bool:
        return self._shared is not None and time.monotonic() >= self._down_until

    async def debit(self, identity: str, item: RateLimitItem, cost: int) -> Debit:
        if self._shared is not None and time.monotonic() >= self._down_until:
            try:
                return await self._debit(self._shared, identity, item, cost, item.amount, shared=True)
            except Exception as exc:  # limits wraps every storage error; Redis down is the usual one
                self._down_until = time.monotonic() + self.retry_after
                log.warning("rate limits: Redis unavailable (%s); counting per instance for %.0f s",
                            exc, self.retry_after)
        if self._shared is not None:
            self.fallbacks += 1
        share = item.amount if self._shared is None else max(1, item.amount // self.instances)
        return await self._debit(self._local, identity, item, cost, share, shared=False)

    @staticmethod
    async def _debit(limiter: FixedWindowRateLimiter, identity: str, item: RateLimitItem, cost: int,
                     budget: int, *, shared: bool) -> Debit:
        key = item.key_for(identity, str(budget))
        # One atomic INCRBY (with the window's EXPIRE on the first debit); the count it returns
        # says whether this debit fits, so concurrent debits on any instance never both fit.
        used = await limiter.storage.incr(key, item.get_expiry(), amount=cost)
        allowed = used <= budget
        reset_s = item.get_expiry()
        if not allowed:
            reset_s = max(1, math.ceil(await limiter.storage.get_expiry(key) - time.time()))
        return Debit(allowed, max(0, budget - used), budget, reset_s, shared)

    async def close(self) -> None:
        """Closes the Redis connections (the counters stay: other instances share them)."""
        if self._shared is not None:
            client = getattr(getattr(self._shared.storage, "bridge", None), "storage", None)
            if client is not None:
                await client.aclose()
