"""The two-level cache under the DataLoaders: L1 in the process, L2 in Redis.

    get_many(kind, keys, fetch, tags_of, gen)
      -> L1: a bounded LRU (entries and bytes) with TTL, values kept as Python objects
      -> L2: Redis, one MGET for the L1 misses, msgpack frames (backends.cache_codec)
      -> fetch(missing keys): PostgreSQL, one batch; results fill both levels

Every entry carries the generation it was read at and its tags; backends.freshness says
whether it is still current. A missing row (None) is cached too, for a shorter time.
Concurrent misses for one key in one process share one read (stampede protection), but
only with a read that started at the same or a later generation: joining an older read
could hand back a value older than the caller's generation. Redis failures cost nothing
but the L2 hits: the cache runs on L1 until Redis answers again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from backends.cache_codec import cache_key, decode_entry, encode_entry
from backends.freshness import Freshness
from backends.metrics import CACHE_LOOKUPS as LOOKUPS
from backends.metrics import CACHE_REDIS_ERRORS as REDIS_ERRORS
from backends.redis_link import RedisLink, RedisUnavailable
from backends.warmup import WARMING, HotKeys

HOT_KINDS = frozenset({"material"})  # kinds whose keys the warm-up counts (backends.warmup)


def count_lookup(level: str, result: str, n: int) -> None:
    """LOOKUPS, for requests' lookups only (not the warm-up's)."""
    if n and not WARMING.get():
        LOOKUPS.labels(level, result).inc(n)


@dataclass(frozen=True)
class CacheLimits:
    l1_entries: int = 50_000
    l1_bytes: int = 64 * 1024 * 1024
    ttl: float = 3600.0  # L1 and L2, for found values: a backstop, writes drop entries by tag
    negative_ttl: float = 15.0  # for keys with no row
    compress_above: int = 1024  # bytes of msgpack before zstd is worth it

    def __post_init__(self) -> None:
        if self.l1_entries < 1 or self.l1_bytes < 1:
            raise ValueError(f"L1 limits must be >= 1 (got {self.l1_entries} entries, {self.l1_bytes} bytes)")
        if self.ttl <= 0 or self.negative_ttl <= 0:
            raise ValueError(f"TTLs must be > 0 (got {self.ttl}, {self.negative_ttl})")


@dataclass(frozen=True)
class _Entry:
    value: Any
    tags: tuple[str, ...]
    gen: int
    expires: float
    size: int


class LruTtl:
    """An LRU map bounded in entries and in bytes (sizes as given by the caller), with TTL."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._items: OrderedDict[str, _Entry] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, now: float) -> _Entry | None:
        entry = self._items.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            self.pop(key)
            return None
        self._items.move_to_end(key)
        return entry

    def put(self, key: str, entry: _Entry) -> None:
        if entry.size > self.max_bytes:
            return
        self.pop(key)
        self._items[key] = entry
        self.bytes += entry.size
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.size

    def pop(self, key: str) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old.size

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


Fetch = Callable[[list[Any]], Awaitable[Sequence[Any]]]
TagsOf = Callable[[Any, Any], Sequence[str] | None]  # None: the value is not to be kept
_MISSING = object()


class TwoLevelCache:
    """L1 + optional L2 (Redis), validated by a Freshness; see the module docstring."""

    def __init__(self, freshness: Freshness, redis: RedisLink | None, ns: str,
                 limits: CacheLimits = CacheLimits(), hot: HotKeys | None = None) -> None:
        self.freshness, self.redis, self.ns, self.limits = freshness, redis, ns, limits
        self.hot = hot  # request counts for the warm-up (None: nothing counted)
        self.l1 = LruTtl(limits.l1_entries, limits.l1_bytes)
        self._inflight: dict[str, tuple[int, asyncio.Future[Any]]] = {}
        freshness.on_reset(self.l1.clear)

    async def get_many(self, kind: str, keys: Sequence[Hashable], fetch: Fetch, tags_of: TagsOf,
                       gen: int) -> list[Any]:
        """Values for `keys` in order; `fetch(missing keys)` answers in key order, None for no row."""
        if self.hot is not None and kind in HOT_KINDS:
            self.hot.count(kind, (str(k) for k in keys))
        now = time.monotonic()
        names = [cache_key(self.ns, kind, k) for k in keys]
        results: list[Any] = [_MISSING] * len(keys)
        valid = self.freshness.valid
        joined: list[tuple[int, asyncio.Future[Any]]] = []
        own: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            entry = self.l1.get(name, now)
            if entry is not None and valid(entry.gen, entry.tags):
                results[i] = entry.value
                continue
            inflight = self._inflight.get(name)
            if inflight is not None and inflight[0] >= gen:
                joined.append((i, inflight[1]))
            else:
                own.setdefault(name, []).append(i)
        misses = len(joined) + sum(len(v) for v in own.values())
        count_lookup("l1", "hit", len(keys) - misses)
        count_lookup("l1", "miss", misses)
        if own:
            await self._read_through(kind, keys, names, own, results, fetch, tags_of, gen)
        for i, future in joined:
            # Shielded: a cancelled caller must not cancel the read other callers wait for.
            results[i] = await asyncio.shield(future)
        return results

    async def _read_through(self, kind: str, keys: Sequence[Hashable], names: list[str],
                            own: dict[str, list[int]], results: list[Any], fetch: Fetch, tags_of: TagsOf,
                            gen: int) -> None:
        loop = asyncio.get_running_loop()
        futures = {name: loop.create_future() for name in own}
        for name, future in futures.items():
            self._inflight[name] = (gen, future)
        try:
            missing = await self._from_l2(own, results)
            if missing:
                values = await fetch([keys[own[name][0]] for name in missing])
                if len(values) != len(missing):
                    raise RuntimeError(f"cache fetch for {kind} returned {len(values)} values for {len(missing)} keys")
                writes = []
                for name, value in zip(missing, values, strict=True):
                    for i in own[name]:
                        results[i] = value
                    frame = self._fill(name, keys[own[name][0]], value, tags_of, gen)
                    if frame is not None:
                        writes.append((name, frame))
                await self._to_l2(writes)
            for name, future in futures.items():
                future.set_result(results[own[name][0]])
        except BaseException as exc:
            for future in futures.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: joiners may all have gone
            raise
        finally:
            for name, future in futures.items():
                if self._inflight.get(name, (0, None))[1] is future:
                    del self._inflight[name]

    async def _from_l2(self, own: dict[str, list[int]], results: list[Any]) -> list[str]:
        """Fills `results` from Redis; returns the names still missing."""
        names = list(own)
        if self.redis is None or not self.redis.available:
            return names
        try:
            frames = await self.redis.run(lambda r: r.mget(names))
        except RedisUnavailable:
            REDIS_ERRORS.inc()
            return names
        missing, now = [], time.monotonic()
        for name, frame in zip(names, frames, strict=True):
            if frame is None:
                missing.append(name)
                continue
            gen, tags, value = decode_entry(frame)
            if not self.freshness.valid(gen, tags):
                missing.append(name)
                continue
            for i in own[name]:
                results[i] = value
            ttl = self.limits.ttl if value is not None else self.limits.negative_ttl
            self.l1.put(name, _Entry(value, tags, gen, now + ttl, len(frame)))
        count_lookup("l2", "hit", len(names) - len(missing))
        count_lookup("l2", "miss", len(missing))
        return missing

    def _fill(self, name: str, key: Any, value: Any, tags_of: TagsOf, gen: int) -> tuple[bytes, int] | None:
        found = tags_of(key, value)
        if found is None:
            return None
        tags = tuple(found)
        ttl = self.limits.ttl if value is not None else self.limits.negative_ttl
        frame = encode_entry(gen, tags, value, self.limits.compress_above)
        # A value read at a generation that an applied event has overtaken is not kept: it
        # may be older than that event's change.
        if self.freshness.valid(gen, tags):
            self.l1.put(name, _Entry(value, tags, gen, time.monotonic() + ttl, len(frame)))
        return frame, max(1, int(ttl))

    async def _to_l2(self, writes: list[tuple[str, tuple[bytes, int]]]) -> None:
        if not writes or self.redis is None or not self.redis.available:
            return

        def build(pipe: Any) -> None:
            for name, (frame, ttl) in writes:
                pipe.set(name, frame, ex=ttl)

        try:
            await self.redis.pipeline(build)
        except RedisUnavailable:
            REDIS_ERRORS.inc()


class CacheView:
    """One request's window on the cache: the generation it observed (fetched once, lazily),
    and the tags of everything the request read (what its response depends on)."""

    def __init__(self, cache: TwoLevelCache, generation: int | None = None) -> None:
        self.cache = cache
        self._gen: asyncio.Future[int] | None = None
        # Issue 6: a subscription's next event reads at the generation this instance has
        # applied (the event hub applies events before fanning them out), not at one fetched
        # from Redis or PostgreSQL per event and subscriber.
        self._known = generation
        self.tags: set[str] = set()
        self.cacheable = True  # False once the request read something tags cannot describe

    def note(self, *tags: str) -> None:
        self.tags.update(tags)

    def not_cacheable(self) -> None:
        self.cacheable = False

    async def generation(self) -> int:
        if self._known is not None:
            return self._known
        if self._gen is None:
            self._gen = asyncio.ensure_future(self.cache.freshness.observe())
        return await asyncio.shield(self._gen)

    async def get_many(self, kind: str, keys: Sequence[Hashable], fetch: Fetch, tags_of: TagsOf) -> list[Any]:
        """Like TwoLevelCache.get_many at this request's generation; notes the values' tags."""
        values = await self.cache.get_many(kind, keys, fetch, tags_of, await self.generation())
        for key, value in zip(keys, values, strict=True):
            self.tags.update(tags_of(key, value) or ())
        return values

    async def committed(self) -> None:
        """A write of this request committed: invalidate everywhere before answering."""
        await self.cache.freshness.committed()
