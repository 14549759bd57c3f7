"""Readiness: each backend's state and latency, checked concurrently with a timeout each.

PostgreSQL is required: the instance is not ready while it is unreachable or while
migrations are pending (another instance is applying them, or AUTO_MIGRATE is off). Redis,
the vector store and the embedder are optional: one of them down makes the instance
`degraded` (the cache runs on L1, search on its text side) but still ready.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from backends import metrics
from backends.migrator import pending_migrations
from backends.postgres import PostgresBackend
from backends.redis_link import RedisLink

CHECK_TIMEOUT = 2.0


async def _timed(name: str, check: Callable[[], Awaitable[dict[str, Any]]], limit_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit_s):
            state = await check()
    except TimeoutError:
        state = {"status": "down", "error": f"no answer within {limit_s:g} s"}
    except Exception as exc:  # the reason is reported; the state is "down"
        state = {"status": "down", "error": str(exc) or type(exc).__name__}
    state["latencyMs"] = round((time.perf_counter() - started) * 1000, 2)
    metrics.BACKEND_UP.labels(name).set(1 if state["status"] == "up" else 0)
    return state


async def _postgres(pg: PostgresBackend) -> dict[str, Any]:
    async with pg.pool.acquire() as conn:
        pending = await pending_migrations(conn)
    state: dict[str, Any] = {"status": "up" if not pending else "migrating", "pendingMigrations": pending}
    state.update(pg.pool_usage())
    return state


async def _redis(link: RedisLink) -> dict[str, Any]:
    await link.ping()
    return {"status": "up", "circuit": link.breaker.state}


async def _vectors(search: Any) -> dict[str, Any]:
    index = search.index
    breaker = getattr(index, "breaker", None)
    if not search.vectors_open and not await search.open_vectors(retry_after=0):
        return {"status": "down", "error": "the vector store could not be opened"}
    inner = getattr(index, "inner", index)
    points = await inner.count()
    return {"status": "up", "points": points, **({"circuit": breaker.state} if breaker else {})}


async def _embedder(search: Any) -> dict[str, Any]:
    embedder = search.embedder
    breaker = getattr(embedder, "breaker", None)
    inner = getattr(embedder, "inner", embedder)
    # A fixed text: after the first check it comes from the query cache, so checks cost nothing
    # while the model thread is busy indexing; what the check proves is the circuit's state.
    await inner.query("health check")
    state: dict[str, Any] = {"status": "up", "model": getattr(inner, "model_id", None)}
    if breaker is not None:
        state["circuit"] = breaker.state
        if not breaker.allows_calls:
            state["status"] = "down"
    return state


async def readiness(pg: PostgresBackend, redis: RedisLink | None, search: Any,
                    limit_s: float = CHECK_TIMEOUT) -> tuple[bool, dict[str, Any]]:
    """(ready, the report): status ready, degraded (an optional backend down) or not ready."""
    checks: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {"postgres": lambda: _postgres(pg)}
    if redis is not None:
        checks["redis"] = lambda: _redis(redis)
    if search is not None and search.index is not None:
        checks["vectorStore"] = lambda: _vectors(search)
    if search is not None and search.embedder is not None:
        checks["embedder"] = lambda: _embedder(search)
    states = await asyncio.gather(*(_timed(name, check, limit_s) for name, check in checks.items()))
    report: dict[str, Any] = dict(zip(checks, states, strict=True))
    ready = report["postgres"]["status"] == "up"
    degraded = any(state["status"] != "up" for name, state in report.items() if name != "postgres")
    report = {"status": "not ready" if not ready else "degraded" if degraded else "ready", **report}
    return ready, report
