"""Warm-up: the hottest entries are read back into the cache before clients ask for them.

Counting (cheap, on the request path): `HotKeys.count(kind, members)` adds to a plain dict
per kind (material ids loaded by id; documents of stored responses), trimmed to its top
`max_keys` whenever it grows to twice that. With Redis, the counts of the last second are
added to a sorted set per kind (`{prefix}:hot:{kind}`, one pipeline of ZINCRBY a second,
trimmed to its top entries, halved every `decay_s` by whichever instance gets there first),
so every instance, and an instance started later, knows the hot set of all of them.

Warming (background, `Warmer`): on start, and after an invalidation burst (at least
`burst_events` outbox events, or a reset of the tag history, applied since the last check;
the warm-up waits for a quiet second, and for `cooldown` seconds after the previous one), the top `top` materials are loaded through the
loaders' batch path (L1, then L2, then one statement per chunk; both levels are filled,
under the usual freshness rules) and the top stored response documents are executed again
through the response cache (stored only if the usual rules allow); on start only, the
`top_searches` most searched queries are embedded into the query-vector caches (a vector
depends on the model alone). One warm-up at a time, bounded work, never awaited by start-up
or by a request; lookups made while warming are neither counted as hot nor as request hits
and misses.

Refreshing (background, `Refresher`): hot stored responses that a write dropped are
executed again right after it (see the class).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import orjson
from prometheus_client import Counter

from backends.background import BackgroundJob
from backends.redis_link import RedisLink, RedisUnavailable

log = logging.getLogger(__name__)

WARMING: contextvars.ContextVar[bool] = contextvars.ContextVar("cache_warming", default=False)
WARMED = Counter("materials_cache_warmed", "Keys the warm-up read back into the cache", ["kind"])
MAX_MEMBER_BYTES = 4096  # a response document longer than this is not remembered


class HotKeys:
    """Request counts per kind and member, bounded; shared through Redis when there is one."""

    def __init__(self, redis: RedisLink | None, key_prefix: str, *, max_keys: int = 2000,
                 shared_keys: int = 5000, decay_s: float = 600.0) -> None:
        if max_keys < 1 or shared_keys < 1 or decay_s <= 0:
            raise ValueError(f"max_keys, shared_keys and decay_s must be > 0 (got {max_keys}, {shared_keys}, {decay_s})")
        self.redis, self.prefix = redis, key_prefix
        self.max_keys, self.shared_keys, self.decay_s = max_keys, shared_keys, decay_s
        self.counts: dict[str, dict[str, int]] = {}
        self._pending: dict[str, dict[str, int]] = {}
        # Stored responses counted here, by the entity tags they hold (backends.warmup.Refresher):
        # member -> its tags, and tag -> members. Only members still among the counts are kept.
        self._member_tags: dict[str, tuple[str, ...]] = {}
        self._by_tag: dict[str, set[str]] = {}

    def count(self, kind: str, members: Iterable[str]) -> None:
        if WARMING.get():
            return
        counts = self.counts.setdefault(kind, {})
        pending = self._pending.setdefault(kind, {})
        for member in members:
            counts[member] = counts.get(member, 0) + 1
            pending[member] = pending.get(member, 0) + 1
        if len(counts) >= 2 * self.max_keys:
            self.counts[kind] = kept = _top(counts, self.max_keys)
            if kind == "response":
                for member in [m for m in self._member_tags if m not in kept]:
                    self._unindex(member)
        if len(pending) >= 2 * self.max_keys:
            self._pending[kind] = _top(pending, self.max_keys)

    def key(self, kind: str) -> str:
        return f"{self.prefix}:hot:{kind}"

    def index_response(self, member: str, tags: Sequence[str]) -> None:
        """Remembers which entities a counted response holds (its tags but the list-wide ones,
        which every write of a kind touches), so a write can find the hot responses it dropped."""
        entity_tags = tuple(t for t in tags if not t.startswith("list:"))
        if self._member_tags.get(member) == entity_tags:
            return
        self._unindex(member)
        self._member_tags[member] = entity_tags
        for tag in entity_tags:
            self._by_tag.setdefault(tag, set()).add(member)

    def _unindex(self, member: str) -> None:
        for tag in self._member_tags.pop(member, ()):
            members = self._by_tag.get(tag)
            if members is not None:
                members.discard(member)
                if not members:
                    del self._by_tag[tag]

    def indexed(self, member: str) -> bool:
        return member in self._member_tags

    def hot_responses(self, tags: Iterable[str], min_count: int) -> list[str]:
        """Counted responses that hold any of `tags` and were requested at least `min_count`
        times here, most requested first."""
        counts = self.counts.get("response", {})
        found: set[str] = set()
        for tag in tags:
            if tag == "*":  # an unknown change: anything may be stale
                found.update(self._member_tags)
                break
            found.update(self._by_tag.get(tag, ()))
        hot = [m for m in found if counts.get(m, 0) >= min_count]
        hot.sort(key=lambda m: counts.get(m, 0), reverse=True)
        return hot

    async def flush(self) -> None:
        """Adds the counts since the last flush to the shared sorted sets (nothing without Redis)."""
        pending, self._pending = self._pending, {}
        if self.redis is None or not self.redis.available or not any(pending.values()):
            return

        def build(pipe: Any) -> None:
            for kind, members in pending.items():
                if not members:
                    continue
                key = self.key(kind)
                for member, n in members.items():
                    pipe.zincrby(key, n, member)
                pipe.zremrangebyrank(key, 0, -self.shared_keys - 1)  # keep the top shared_keys
            pipe.set(f"{self.prefix}:hot:decayed", 1, nx=True, ex=max(1, int(self.decay_s)))

        try:
            results = await self.redis.pipeline(build)
            if results and results[-1]:  # this instance's turn: old popularity fades
                def decay(pipe: Any) -> None:
                    for kind in pending:
                        pipe.zunionstore(self.key(kind), {self.key(kind): 0.5})

                await self.redis.pipeline(decay)
        except RedisUnavailable:
            pass  # the counts of that second are lost; the local ones remain

    async def top(self, kind: str, n: int) -> list[str]:
        """The `n` most requested members: shared ones from Redis, else this process's."""
        if self.redis is not None and self.redis.available:
            try:
                members = await self.redis.run(lambda r: r.zrevrange(self.key(kind), 0, n - 1))
                if members:
                    return [m.decode() if isinstance(m, bytes) else m for m in members]
            except RedisUnavailable:
                pass
        counts = self.counts.get(kind, {})
        return sorted(counts, key=counts.__getitem__, reverse=True)[:n]


def _top(counts: dict[str, int], n: int) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: item[1], reverse=True)[:n])


def response_member(document: str, name: str | None, variables: dict[str, Any] | None) -> str | None:
    """How a stored response's request is remembered (None: too long to be worth it)."""
    member = orjson.dumps([document, name, variables or {}], option=orjson.OPT_SORT_KEYS).decode()
    return member if len(member) <= MAX_MEMBER_BYTES else None


LoadMaterials = Callable[[Sequence[int]], Awaitable[None]]
ExecuteResponse = Callable[[str, str | None, dict[str, Any]], Awaitable[Any]]
WarmSearches = Callable[[int], Awaitable[int]]  # embeds the n most searched queries; returns how many


class Warmer(BackgroundJob):
    """The background task: flushes hot counts every `interval` and warms on start and after bursts."""

    task_name = "cache-warmup"

    def __init__(self, hot: HotKeys, events_applied: Callable[[], int], load_materials: LoadMaterials,
                 execute_response: ExecuteResponse | None, *, warm_searches: WarmSearches | None = None,
                 top: int = 500, top_responses: int = 100, top_searches: int = 100,
                 chunk: int = 100, burst_events: int = 50, interval: float = 1.0, cooldown: float = 30.0) -> None:
        if (top < 0 or top_responses < 0 or top_searches < 0 or chunk < 1 or burst_events < 1 or interval <= 0
                or cooldown < 0):
            raise ValueError("Warmer: top, top_responses, top_searches, cooldown >= 0; chunk, burst_events >= 1; "
                             "interval > 0")
        self.hot, self.events_applied = hot, events_applied
        self.load_materials, self.execute_response = load_materials, execute_response
        self.warm_searches, self.top_searches = warm_searches, top_searches
        self.top, self.top_responses, self.chunk = top, top_responses, chunk
        self.burst_events, self.interval, self.cooldown = burst_events, interval, cooldown
        self.runs = 0  # warm-ups completed
        self.ticks = 0  # checks completed (each second)
        self.warmed = {"material": 0, "response": 0, "search": 0}  # keys read by the last warm-up
        super().__init__()
        self._done = asyncio.Condition()

    async def stop(self) -> None:
        running = self._task is not None
        await super().stop()
        if running:
            with contextlib.suppress(Exception):
                await self.hot.flush()  # the last second's counts

    async def wait_runs(self, runs: int) -> None:
        """Returns once `runs` warm-ups have completed (tests and benches)."""
        async with self._done:
            await self._done.wait_for(lambda: self.runs >= runs)

    async def wait_ticks(self, ticks: int) -> None:
        """Returns once `ticks` checks have completed (tests)."""
        async with self._done:
            await self._done.wait_for(lambda: self.ticks >= ticks)

    async def _run(self) -> None:
        pending = True  # the start-up warm-up
        seen = self.events_applied()
        allowed_at = 0.0  # steady writes are not a burst each second: at most one warm-up per cooldown
        while True:
            try:
                applied = self.events_applied()
                burst = applied - seen >= self.burst_events
                seen = applied
                if burst:
                    pending = True  # warm once the burst is over, not in the middle of it
                elif pending and time.monotonic() >= allowed_at:
                    pending = False
                    await self.warm()
                    allowed_at = time.monotonic() + self.cooldown
                await self.hot.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the warm-up is an optimisation: log and go on
                log.warning("cache warm-up: %s", exc or type(exc).__name__)
            async with self._done:
                self.ticks += 1
                self._done.notify_all()
            await asyncio.sleep(self.interval)

    async def warm(self) -> None:
        token = WARMING.set(True)
        try:
            warmed = {"material": 0, "response": 0, "search": 0}
            if self.warm_searches is not None and self.top_searches and self.runs == 0:
                # Query vectors depend on the model only: once, on start, most searched first.
                warmed["search"] = await self.warm_searches(self.top_searches)
            ids = [int(m) for m in await self.hot.top("material", self.top) if m.isdigit()]
            for start in range(0, len(ids), self.chunk):
                batch = ids[start:start + self.chunk]
                await self.load_materials(batch)
                warmed["material"] += len(batch)
            if self.execute_response is not None and self.top_responses:
                for member in await self.hot.top("response", self.top_responses):
                    try:
                        document, name, variables = orjson.loads(member)
                    except (orjson.JSONDecodeError, ValueError):
                        continue
                    await self.execute_response(document, name, variables)
                    warmed["response"] += 1
            for kind, n in warmed.items():
                WARMED.labels(kind).inc(n)
            self.warmed = warmed
            log.info("cache warm-up: %d materials, %d responses, %d search queries", warmed["material"],
                     warmed["response"], warmed["search"])
        finally:
            WARMING.reset(token)
            async with self._done:
                self.runs += 1
                self._done.notify_all()


class Refresher(BackgroundJob):
    """Reads hot stored responses again right after a write dropped them.

    A write drops every stored response that holds what it changed (backends.freshness);
    the next reader of a hot one would miss and execute it. Instead, when events are
    applied (`touched`, a Freshness callback), the responses this process counted at
    least `min_count` times that hold a touched entity are executed again in the
    background, one at a time, through the response cache (stored under the usual
    freshness rules, at a generation that includes the write). The instance that
    committed the write refreshes at once; the others wait `remote_delay` seconds, by
    which time the writer has usually stored the new entry in Redis, so theirs is an L2
    read, not a second execution. At most `max_pending` responses wait; more are
    dropped (counted in `dropped`) and left to the next reader.
    """

    task_name = "cache-refresh"

    def __init__(self, hot: HotKeys, execute_response: ExecuteResponse, *, min_count: int = 2,
                 max_pending: int = 1000, remote_delay: float = 0.05) -> None:
        if min_count < 1 or max_pending < 1 or remote_delay < 0:
            raise ValueError("Refresher: min_count, max_pending >= 1; remote_delay >= 0")
        self.hot, self.execute_response = hot, execute_response
        self.min_count, self.max_pending, self.remote_delay = min_count, max_pending, remote_delay
        self.refreshed = 0  # responses executed again
        self.dropped = 0  # responses not queued: the queue was full
        super().__init__()
        self._due: dict[str, float] = {}  # member -> monotonic time it may run from
        self._wake = asyncio.Event()
        self._idle = asyncio.Condition()
        self._busy = False  # a refresh is running

    def touched(self, tags: set[str], local: bool) -> None:
        members = self.hot.hot_responses(tags, self.min_count)
        if not members:
            return
        due = time.monotonic() + (0.0 if local else self.remote_delay)
        for member in members:
            if member in self._due:
                self._due[member] = min(self._due[member], due)
            elif len(self._due) < self.max_pending:
                self._due[member] = due
            else:
                self.dropped += 1
        self._wake.set()

    async def wait_idle(self) -> None:
        """Returns once nothing is waiting to be refreshed or being refreshed (tests and benches)."""
        async with self._idle:
            await self._idle.wait_for(lambda: not self._due and not self._busy)

    async def wait_refreshed(self, n: int) -> None:
        """Returns once `n` responses have been refreshed (tests)."""
        async with self._idle:
            await self._idle.wait_for(lambda: self.refreshed >= n)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._due:
                now = time.monotonic()
                member = min(self._due, key=self._due.__getitem__)
                if self._due[member] > now:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._due[member] - now):
                            await self._wake.wait()  # an earlier one may arrive meanwhile
                    self._wake.clear()
                    continue
                del self._due[member]
                self._busy = True
                try:
                    await self._refresh(member)
                finally:
                    self._busy = False
                async with self._idle:
                    self._idle.notify_all()

    async def _refresh(self, member: str) -> None:
        try:
            document, name, variables = orjson.loads(member)
        except (orjson.JSONDecodeError, ValueError):
            return
        token = WARMING.set(True)
        try:
            await self.execute_response(document, name, variables)
            self.refreshed += 1
            WARMED.labels("refresh").inc()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an optimisation: the next reader executes it instead
            log.warning("cache refresh: %s", exc or type(exc).__name__)
        finally:
            WARMING.reset(token)
