"""Gauges read from live objects: pool use, outbox lag; and the pool-saturation advice.

`GaugeSampler` runs in each server process (a BackgroundJob): every `interval` seconds it
sets the pool gauges of backends.metrics, the outbox lag (latest committed event id minus
the generation this instance's cache applied, backends.freshness), and runs the other
registered samplers (circuit states). In multiprocess mode that is how a scrape answered by
another worker sees this one's values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from backends import metrics
from backends.background import BackgroundJob
from backends.errors import BackendUnavailable
from backends.freshness import LATEST_EVENT, Freshness
from backends.postgres import PostgresBackend

log = logging.getLogger(__name__)


class PoolWatch:
    """Sets a pool's gauges and logs a recommendation when callers wait for connections."""

    def __init__(self, name: str, pg: PostgresBackend, *, advice_every: float = 60.0) -> None:
        self.name, self.pg, self.advice_every = name, pg, advice_every
        self._advised = -1e9

    def sample(self, *, count: bool = True) -> dict[str, int]:
        """Sets the gauges; with `count`, a saturated pool is counted (and advised about): the
        background sampler counts, a scrape only reads, so the counter's rate is per interval,
        not per scrape."""
        usage = self.pg.pool_usage()
        metrics.record_pool(self.name, usage)
        if count and usage["in_use"] >= usage["max"] and usage["waiting"] > 0:
            metrics.PG_POOL_SATURATED.labels(self.name).inc()
            now = time.monotonic()
            if now - self._advised >= self.advice_every:
                self._advised = now
                log.warning(
                    "PostgreSQL pool %r saturated: all %d connections in use, %d request(s) waiting; raise "
                    "PG_POOL_MAX (the server's max_connections allows it?), add DATABASE_READ_URL replicas "
                    "for reads, or run more instances", self.name, usage["max"], usage["waiting"])
        return usage


class GaugeSampler(BackgroundJob):
    """Samples pools, outbox lag and the registered samplers every `interval` seconds."""

    task_name = "gauge-sampler"

    def __init__(self, pools: Sequence[PoolWatch], freshness: Freshness | None, *, interval: float = 2.0) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 (got {interval})")
        super().__init__()
        self.pools, self.freshness, self.interval = list(pools), freshness, interval

    def sample_pools(self, *, count: bool = False) -> None:
        for pool in self.pools:
            try:
                pool.sample(count=count)
            except Exception:  # a pool not open yet or closed: nothing to report
                continue

    async def sample_lag(self) -> int | None:
        """Latest event id minus what this instance applied (None without a cache or PostgreSQL)."""
        if self.freshness is None or not self.pools:
            return None
        try:
            latest = int(await self.pools[0].pg.fetchval(LATEST_EVENT))
        except BackendUnavailable:
            return None
        applied = self.freshness.applied if self.freshness.applied is not None else 0
        metrics.OUTBOX_APPLIED.set(applied)
        lag = max(0, latest - applied)
        metrics.OUTBOX_LAG.set(lag)
        return lag

    async def sample(self) -> None:
        self.sample_pools(count=True)
        metrics.sample_gauges()  # the registered samplers (this one's sample_pools among them: gauges only)
        await self.sample_lag()

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception as exc:  # never let a sampling failure end the loop
                log.debug("gauge sampling failed: %s", exc)
            await asyncio.sleep(self.interval)
