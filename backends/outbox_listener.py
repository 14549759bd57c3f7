"""Applies outbox events as they commit, not only when a request asks (PostgreSQL LISTEN).

Requests already observe the current generation before any cached read (backends.freshness),
so correctness does not depend on this. What it adds: stale L1 entries are dropped as soon
as a change commits anywhere, and the generation in Redis is raised even when the writer
could not publish it (Redis was down at that moment, or a writer that does not know about
the cache). One dedicated connection per instance, outside the pool, reconnected after
failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from backends.background import BackgroundJob
from backends.freshness import Freshness

log = logging.getLogger(__name__)
CHANNEL = "events"  # pg_notify channel of migrations/0007_events_notify.sql


class OutboxListener(BackgroundJob):
    """`start()` after the pool is open, `stop()` before it closes."""

    task_name = "outbox-listener"

    def __init__(self, dsn: str, freshness: Freshness, *, retry_after: float = 1.0, idle_check: float = 5.0) -> None:
        if retry_after <= 0 or idle_check <= 0:
            raise ValueError(f"retry_after and idle_check must be > 0 (got {retry_after}, {idle_check})")
        self.dsn, self.freshness = dsn, freshness
        self.retry_after, self.idle_check = retry_after, idle_check
        super().__init__()
        self.wakeups = 0  # notifications acted on

    async def _run(self) -> None:
        wake = asyncio.Event()

        def notified(*_: Any) -> None:
            wake.set()

        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn)
                await conn.add_listener(CHANNEL, notified)
                wake.set()  # events may have committed while not listening
                while not conn.is_closed():
                    try:
                        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                        # cancellation that lands as the event fires, and stop() would wait forever.
                        async with asyncio.timeout(self.idle_check):
                            await wake.wait()
                    except TimeoutError:
                        await conn.fetchval("SELECT 1")  # a quiet moment: is the connection still there?
                        continue
                    wake.clear()
                    self.wakeups += 1
                    await self.freshness.committed()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: log, wait, listen again; requests do not depend on it
                log.warning("outbox listener: %s; listening again in %.1f s", exc or type(exc).__name__,
                            self.retry_after)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))
            await asyncio.sleep(self.retry_after)
