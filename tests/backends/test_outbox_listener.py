"""Instances apply outbox events as they commit, without a request asking (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis

from backends.freshness import Freshness
from backends.outbox_listener import OutboxListener
from backends.postgres import PostgresBackend
from backends.redis_link import RedisLink
from tests.backends.test_cache import write_event
from tests.conftest import SHARED_REDIS


async def eventually(check: Callable[[], bool], limit: int = 200) -> bool:
    for _ in range(limit):
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


async def test_a_commit_is_applied_and_published_without_a_request(
    empty_catalog: PostgresBackend, redis_prefix: str
) -> None:
    link = await RedisLink(SHARED_REDIS).open()
    freshness = Freshness(empty_catalog, link, key_prefix=redis_prefix)
    await freshness.observe()
    listener = OutboxListener(empty_catalog.dsn, freshness, retry_after=0.1)
    listener.start()
    try:
        assert await eventually(lambda: listener.wakeups >= 1)  # listening
        await write_event(empty_catalog, 7)  # a writer that publishes nothing itself
        latest = await empty_catalog.fetchval("SELECT max(id) FROM events")
        assert await eventually(lambda: freshness.applied == latest)
        assert freshness.touched["material:7"] == latest
        client = aioredis.from_url(SHARED_REDIS)
        assert await client.zscore(f"{redis_prefix}:generation", "g") == latest
        await client.aclose()
    finally:
        await listener.stop()
        await link.close()
