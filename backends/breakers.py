"""Circuit breakers (purgatory) around the optional backends: Redis, the vector store, the embedder.

A breaker counts consecutive failures of calls to one backend; at `threshold` it opens, and
for `reset_s` seconds calls fail at once with `CircuitOpen` (a BackendUnavailable) instead of
waiting for a timeout each. Then it lets calls try again (half-open): one success closes it,
a failure opens it again. So each backend recovers on its own when it returns, and callers
degrade the way they already do for an unavailable backend: the cache runs on L1
(backends.cache), search answers from its text side with `degraded: true` (backends.search).

`GuardedVectorIndex` and `GuardedEmbedder` wrap a VectorIndex and an Embedder so that the
search path needs no change; `RedisLink` takes a breaker directly (backends.redis_link).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from backends import metrics
from backends.errors import BackendUnavailable

T = TypeVar("T")


class CircuitOpen(BackendUnavailable):
    """A backend failed repeatedly moments ago; calls fail fast until it is tried again."""


class Breaker:
    """One backend's circuit: `await breaker.call(op)` runs `op()` unless the circuit is open.

    Only errors for which `counts(exc)` is true count as failures (a cancelled call or a
    caller's mistake says nothing about the backend's health).
    """

    def __init__(self, name: str, *, threshold: int = 3, reset_s: float = 5.0,
                 counts: Callable[[BaseException], bool] | None = None) -> None:
        if threshold < 1 or reset_s <= 0:
            raise ValueError(f"a breaker needs threshold >= 1 and reset_s > 0 (got {threshold}, {reset_s})")
        self.name, self.threshold, self.reset_s = name, threshold, reset_s
        self._counts = counts or _backend_failure
        self._factory = AsyncCircuitBreakerFactory(default_threshold=threshold, default_ttl=reset_s,
                                                   exclude=[(BaseException, self._excluded)])
        self._factory.add_listener(self._changed)
        self.opened = 0  # times the circuit opened

    def _excluded(self, exc: BaseException) -> bool:
        return not self._counts(exc)

    def _changed(self, name: str, event_type: str, event: Any) -> None:
        if event_type == "state_changed":
            metrics.CIRCUIT_STATE.labels(self.name).set(metrics.CIRCUIT_STATES.get(event.state, 0))
            if event.state == "opened":
                self.opened += 1
                metrics.CIRCUIT_OPENED.labels(self.name).inc()

    async def call(self, op: Callable[[], Awaitable[T]]) -> T:
        breaker = await self._factory.get_breaker(self.name)
        try:
            async with breaker:
                return await op()
        except OpenedState:
            # purgatory raises the same exception object every time: drop its traceback so it
            # does not grow with every refused call.
            breaker.context._state.__traceback__ = None
            raise CircuitOpen(f"{self.name} failed {self.threshold} times in a row; retrying it "
                              f"within {self.reset_s:g} s") from None

    @property
    def state(self) -> str:
        """closed, half-opened or opened (opened past its reset time reads as half-opened)."""
        context = self._factory.uow.contexts.breakers.get(self.name) if hasattr(
            self._factory.uow.contexts, "breakers") else None
        if context is None:
            return "closed"
        if context.state == "opened" and context.opened_at is not None and \
                time.time() > context.opened_at + self.reset_s:
            return "half-opened"
        return context.state

    @property
    def allows_calls(self) -> bool:
        return self.state != "opened"

    def sample(self) -> None:
        metrics.CIRCUIT_STATE.labels(self.name).set(metrics.CIRCUIT_STATES.get(self.state, 0))


def _backend_failure(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and not isinstance(exc, asyncio.CancelledError | ValueError | TypeError)


class GuardedVectorIndex:
    """A VectorIndex whose reads go through a breaker (writes are the indexer's, which retries)."""

    def __init__(self, index: Any, breaker: Breaker) -> None:
        self.inner, self.breaker = index, breaker

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def search(self, vector: np.ndarray, flt: Any, limit: int, exclude: Sequence[int] = ()) -> Any:
        return await self.breaker.call(lambda: self.inner.search(vector, flt, limit, exclude=exclude))

    async def vector_of(self, point_id: int) -> np.ndarray | None:
        return await self.breaker.call(lambda: self.inner.vector_of(point_id))

    async def vectors_of(self, point_ids: Sequence[int]) -> dict[int, np.ndarray]:
        return await self.breaker.call(lambda: self.inner.vectors_of(point_ids))

    async def count(self) -> int:
        return await self.breaker.call(self.inner.count)


class GuardedEmbedder:
    """An Embedder whose query embeddings go through a breaker."""

    def __init__(self, embedder: Any, breaker: Breaker) -> None:
        self.inner, self.breaker = embedder, breaker

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def query(self, text: str, *args: Any, **kwargs: Any) -> np.ndarray:
        return await self.breaker.call(lambda: self.inner.query(text, *args, **kwargs))

    async def passages(self, texts: Sequence[str]) -> np.ndarray:
        return await self.inner.passages(texts)

    def close(self) -> None:
        self.inner.close()
