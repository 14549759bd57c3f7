"""The two-level cache on a real PostgreSQL (the outbox) and real Redis servers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from backends.cache import LOOKUPS, CacheLimits, CacheView, TwoLevelCache
from backends.cache_codec import RAW, ZSTD, cache_key, decode_entry, encode_entry, namespace
from backends.freshness import Freshness
from backends.postgres import PostgresBackend
from backends.redis_link import RedisLink
from tests.conftest import SHARED_REDIS
from tests.redis_server import OwnRedis

ROOT = Path(__file__).resolve().parents[2]


class Source:
    """A stand-in for PostgreSQL reads that records which keys it was asked for."""

    def __init__(self, values: dict[Any, Any]) -> None:
        self.values = values
        self.calls: list[list[Any]] = []
        self.gate: asyncio.Event | None = None

    async def fetch(self, keys: list[Any]) -> list[Any]:
        self.calls.append(list(keys))
        snapshot = [self.values.get(k) for k in keys]  # read before waiting: an old snapshot
        if self.gate is not None:
            await self.gate.wait()
        return snapshot


def tags(key: Any, value: Any) -> list[str]:
    return [f"material:{key}"]


@pytest.fixture
async def links() -> AsyncIterator[list[RedisLink]]:
    opened: list[RedisLink] = []
    yield opened
    for link in opened:
        await link.close()


async def make_cache(pg: PostgresBackend, url: str | None, prefix: str, links: list[RedisLink],
                     **limits: Any) -> TwoLevelCache:
    link = None
    if url is not None:
        link = await RedisLink(url, retry_after=0.05).open()
        links.append(link)
    freshness = Freshness(pg, link, key_prefix=prefix)
    return TwoLevelCache(freshness, link, namespace(prefix, "test"), CacheLimits(**limits))


async def write_event(pg: PostgresBackend, material_id: int) -> None:
    await pg.execute("INSERT INTO events (topic, entity_id, payload) VALUES ('material.updated', $1, '{}')",
                     material_id)


def test_values_travel_as_msgpack_frames_compressed_when_large() -> None:
    value = {"id": 7, "name": "Цемент М500", "price": Decimal("380.50"), "at": datetime(2024, 2, 1, tzinfo=UTC),
             "day": date(2024, 2, 1), "attributes": {"color": "серый"}, "aliases": ["кг", "kg"], "sku": None}
    small = encode_entry(12, ["material:7"], value, compress_above=1024)
    assert small[0] == RAW
    assert decode_entry(small) == (12, ("material:7",), value)
    # Plain msgpack reads it without this code (no pickle): extension types stay opaque.
    gen, tagged, raw = msgpack.unpackb(small[1:], raw=False)
    assert gen == 12 and tagged == ["material:7"] and raw["name"] == "Цемент М500" and isinstance(raw["price"], msgpack.ExtType)
    big_value = [value] * 200
    big = encode_entry(12, ["material:7"], big_value, compress_above=1024)
    assert big[0] == ZSTD and len(big) < len(encode_entry(12, ["material:7"], big_value, compress_above=10**9))
    assert decode_entry(big)[2] == big_value


def test_keys_are_the_same_in_every_process_and_change_with_the_schema() -> None:
    here = cache_key("ns", "material", (1, "A-1"))
    script = "from backends.cache_codec import cache_key; print(cache_key('ns', 'material', (1, 'A-1')))"
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        assert out.stdout.strip() == here
    assert cache_key("ns", "material", 1) != cache_key("ns", "material", "1")
    assert namespace("materials", "schema-a") != namespace("materials", "schema-b")


async def test_l1_is_bounded_in_entries_and_bytes(empty_catalog: PostgresBackend, links: list[RedisLink]) -> None:
    cache = await make_cache(empty_catalog, None, "t", links, l1_entries=3)
    source = Source({i: f"value {i}" for i in range(10)})
    await cache.get_many("m", list(range(10)), source.fetch, tags, 0)
    assert len(cache.l1) == 3
    await cache.get_many("m", [9], source.fetch, tags, 0)  # the most recent entries stayed
    assert source.calls == [list(range(10))]
    by_bytes = await make_cache(empty_catalog, None, "t", links, l1_bytes=2000)
    source = Source({i: "x" * 500 for i in range(10)})
    await by_bytes.get_many("m", list(range(10)), source.fetch, tags, 0)
    assert 0 < len(by_bytes.l1) < 10 and by_bytes.l1.bytes <= 2000


async def test_second_read_and_missing_rows_are_served_from_l1(
    empty_catalog: PostgresBackend, links: list[RedisLink]
) -> None:
    cache = await make_cache(empty_catalog, None, "t", links)
    view = CacheView(cache)
    source = Source({1: {"id": 1, "name": "Песок"}})
    hits = LOOKUPS.labels("l1", "hit")._value.get()
    assert await view.get_many("m", [1, 2], source.fetch, tags) == [{"id": 1, "name": "Песок"}, None]
    assert await view.get_many("m", [2, 1], source.fetch, tags) == [None, {"id": 1, "name": "Песок"}]
    assert source.calls == [[1, 2]]  # the missing row was remembered too
    assert LOOKUPS.labels("l1", "hit")._value.get() == hits + 2


async def test_another_instance_reads_l2_instead_of_the_database(
    empty_catalog: PostgresBackend, redis_prefix: str, links: list[RedisLink]
) -> None:
    first = await make_cache(empty_catalog, SHARED_REDIS, redis_prefix, links)
    second = await make_cache(empty_catalog, SHARED_REDIS, redis_prefix, links)
    source = Source({1: {"id": 1, "price": Decimal("10.50")}})
    gen = await first.freshness.observe()
    await first.get_many("m", [1], source.fetch, tags, gen)
    l2_hits = LOOKUPS.labels("l2", "hit")._value.get()
    assert await second.get_many("m", [1], source.fetch, tags, await second.freshness.observe()) == [
        {"id": 1, "price": Decimal("10.50")}]
    assert len(source.calls) == 1
    assert LOOKUPS.labels("l2", "hit")._value.get() == l2_hits + 1
    client = aioredis.from_url(SHARED_REDIS)
    stored = await client.get(cache_key(first.ns, "m", 1))
    await client.aclose()
    assert stored is not None and stored[0] == RAW and decode_entry(stored)[1] == ("material:1",)


async def test_concurrent_misses_for_one_key_cause_one_read(
    empty_catalog: PostgresBackend, links: list[RedisLink]
) -> None:
    cache = await make_cache(empty_catalog, None, "t", links)
    source = Source({1: "one"})
    source.gate = asyncio.Event()
    readers = [asyncio.create_task(cache.get_many("m", [1], source.fetch, tags, 0)) for _ in range(20)]
    await asyncio.sleep(0.05)
    source.gate.set()
    assert await asyncio.gather(*readers) == [["one"]] * 20
    assert source.calls == [[1]]


async def test_a_read_at_a_newer_generation_does_not_join_an_older_read(
    empty_catalog: PostgresBackend, links: list[RedisLink]
) -> None:
    cache = await make_cache(empty_catalog, None, "t", links)
    source = Source({1: "old"})
    source.gate = asyncio.Event()
    slow = asyncio.create_task(cache.get_many("m", [1], source.fetch, tags, await cache.freshness.observe()))
    await asyncio.sleep(0.05)
    source.values[1] = "new"
    await write_event(empty_catalog, 1)
    newer = asyncio.create_task(cache.get_many("m", [1], source.fetch, tags, await cache.freshness.committed()))
    await asyncio.sleep(0.05)
    source.gate.set()
    assert await slow == ["old"] and await newer == ["new"]
    assert source.calls == [[1], [1]]


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "postgres-only"])
async def test_a_read_that_started_before_a_commit_cannot_leave_the_old_value_behind(
    empty_catalog: PostgresBackend, redis_prefix: str, links: list[RedisLink], shared: bool
) -> None:
    url = SHARED_REDIS if shared else None
    reader = await make_cache(empty_catalog, url, redis_prefix, links)
    writer = await make_cache(empty_catalog, url, redis_prefix, links)
    source = Source({1: "old"})
    source.gate = asyncio.Event()
    slow = asyncio.create_task(reader.get_many("m", [1], source.fetch, tags, await reader.freshness.observe()))
    await asyncio.sleep(0.05)  # the slow read has its old snapshot
    source.values[1] = "new"
    await write_event(empty_catalog, 1)
    await writer.freshness.committed()  # what a mutation does before it answers
    source.gate.set()
    assert await slow == ["old"]  # it started before the write: the old value is right for it
    # Any read that starts now, on either instance, sees the new value.
    for cache in (reader, writer):
        assert await cache.get_many("m", [1], source.fetch, tags, await cache.freshness.observe()) == ["new"]


async def test_an_instance_drops_its_l1_when_another_commits(
    empty_catalog: PostgresBackend, redis_prefix: str, links: list[RedisLink]
) -> None:
    reader = await make_cache(empty_catalog, SHARED_REDIS, redis_prefix, links)
    writer = await make_cache(empty_catalog, SHARED_REDIS, redis_prefix, links)
    source = Source({1: "old", 2: "other"})
    await reader.get_many("m", [1, 2], source.fetch, tags, await reader.freshness.observe())
    source.values[1] = "new"
    await write_event(empty_catalog, 1)
    await writer.freshness.committed()
    gen = await reader.freshness.observe()
    assert await reader.get_many("m", [1, 2], source.fetch, tags, gen) == ["new", "other"]
    assert source.calls == [[1, 2], [1]]  # only the changed entry was read again


async def test_redis_stopped_and_restarted_costs_only_l2_hits(
    empty_catalog: PostgresBackend, links: list[RedisLink]
) -> None:
    server = OwnRedis()
    server.start()
    try:
        first = await make_cache(empty_catalog, server.url, "own", links)
        second = await make_cache(empty_catalog, server.url, "own", links)
        source = Source({i: f"value {i}" for i in range(10)})

        async def read(cache: TwoLevelCache, key: int) -> Any:
            return (await cache.get_many("m", [key], source.fetch, tags, await cache.freshness.observe()))[0]

        assert await read(first, 1) == "value 1"
        assert await read(second, 1) == "value 1" and len(source.calls) == 1  # from L2
        server.stop()
        # Redis is gone: reads still answer (L1, then the database), writes still invalidate.
        assert await read(first, 2) == "value 2" and await read(second, 1) == "value 1"
        source.values[1] = "changed"
        await write_event(empty_catalog, 1)
        await first.freshness.committed()
        assert await read(second, 1) == "changed"
        server.start()
        await asyncio.sleep(0.1)  # past the link's retry pause
        calls = len(source.calls)
        assert await read(first, 3) == "value 3"
        assert await read(second, 3) == "value 3" and len(source.calls) == calls + 1  # L2 again
    finally:
        server.stop()
