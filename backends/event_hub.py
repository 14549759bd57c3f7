"""Fans committed outbox events out to this process's subscribers (PostgreSQL LISTEN).

One dedicated connection per process LISTENs on channel `events` (the trigger of
migrations/0007) and, after each wake-up, reads the rows after `position` in id order on the
same connection. Every event goes to each subscriber whose filter accepts it, through the
subscriber's bounded queue; a subscriber whose queue is full is closed with the reason
(it could not keep up) instead of letting memory grow. `position` only moves forward: after
a lost connection the hub listens again and reads on from where it was, so no event is
skipped. Other per-process work that wants to run after commits (the cache's freshness)
registers an `on_wake` callback instead of opening a LISTEN connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import orjson

from backends.background import BackgroundJob
from backends.import_progress import CHANNEL as PROGRESS_CHANNEL
from backends.outbox_reader import OutboxEvent, events_after, latest_event_id, prune_events

log = logging.getLogger(__name__)
CHANNEL = "events"  # pg_notify channel of migrations/0007_events_notify.sql
Accepts = Callable[[OutboxEvent], bool]
APPLICATION_NAME = "materials-event-hub"  # how its connection shows in pg_stat_activity
CONNECT_TIMEOUT_S = 10.0  # opening the LISTEN connection
COMMAND_TIMEOUT_S = 30.0  # any statement on it (reading new events, pruning a batch)
PING_TIMEOUT_S = 5.0  # the idle check's SELECT 1
PRUNE_BATCH = 10_000  # events deleted per statement
PRUNE_BUDGET_S = 5.0  # batches follow one another for at most this long per pruning round

class SubscriberClosed(Exception):
    """The hub closed the subscriber; the message says why (it fell behind, the hub stopped)."""


class Subscriber:
    """One consumer's bounded queue of accepted events; iterate with `async for` or `get()`."""

    __slots__ = ("_closed", "_queue", "_wake", "accepts", "hub", "limit", "since")

    def __init__(self, hub: EventHub, accepts: Accepts, limit: int, since: int) -> None:
        self.hub, self.accepts, self.limit = hub, accepts, limit
        self.since = since  # the hub's position when it subscribed: every later event is queued
        self._queue: deque[OutboxEvent] = deque()
        self._wake = asyncio.Event()
        self._closed: str | None = None

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def closed(self) -> str | None:
        """None while open, else why it was closed."""
        return self._closed

    def offer(self, event: OutboxEvent) -> bool:
        """Queues the event; False (and closed) when the queue was full."""
        if len(self._queue) >= self.limit:
            self.overflow()
            return False
        self._queue.append(event)
        self._wake.set()
        return True

    def overflow(self) -> None:
        self.close(f"the subscriber fell behind: {len(self._queue)} events were waiting to be sent (at most "
                   f"{self.limit} are kept per subscription); resume with the cursor of the last event received")

    def close(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
            self._queue.clear()
            self._wake.set()
            self.hub._forget(self)

    async def get(self) -> OutboxEvent:
        """The next event; raises SubscriberClosed once closed (queued events are dropped then)."""
        while not self._queue:
            if self._closed is not None:
                raise SubscriberClosed(self._closed)
            self._wake.clear()
            await self._wake.wait()
        if self._closed is not None:
            raise SubscriberClosed(self._closed)
        self.hub._room.set()
        return self._queue.popleft()

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> OutboxEvent:
        return await self.get()


class ProgressWatcher:
    """The latest progress message of one import (one slot, never a queue: a newer message
    supersedes an older one)."""

    def __init__(self, hub: EventHub, price_list_id: int) -> None:
        self.hub, self.price_list_id = hub, price_list_id
        self.latest: dict[str, Any] | None = None
        self._changed = asyncio.Event()

    def update(self, state: dict[str, Any]) -> None:
        self.latest = state
        self._changed.set()

    async def next(self) -> dict[str, Any]:
        """The next message after the last one taken."""
        await self._changed.wait()
        self._changed.clear()
        assert self.latest is not None
        return self.latest

    def close(self) -> None:
        watchers = self.hub._watchers.get(self.price_list_id)
        if watchers is not None:
            watchers.discard(self)
            if not watchers:
                del self.hub._watchers[self.price_list_id]


class EventHub(BackgroundJob):
    """`await open()` after the pool is open (LISTEN and the starting position), then `start()`;
    `stop()` closes every subscriber."""

    task_name = "event-hub"

    def __init__(self, dsn: str, *, queue_limit: int = 1000, read_batch: int = 1000, slow_grace: float = 2.0,
                 retry_after: float = 1.0, idle_check: float = 5.0, retention: timedelta | None = None,
                 prune_every: float = 600.0, on_wake: Sequence[Callable[[], Awaitable[Any]]] = ()) -> None:
        if queue_limit < 1 or read_batch < 1:
            raise ValueError(f"queue_limit and read_batch must be >= 1 (got {queue_limit}, {read_batch})")
        if retry_after <= 0 or idle_check <= 0 or prune_every <= 0 or slow_grace < 0:
            raise ValueError("retry_after, idle_check and prune_every must be > 0, slow_grace >= 0")
        super().__init__()
        self.dsn, self.queue_limit, self.slow_grace = dsn, queue_limit, slow_grace
        # A batch fits in a half-empty queue: a burst (a large import) reaches a subscriber in
        # steps it can take, and only one that stays behind is closed.
        self.read_batch = max(1, min(read_batch, queue_limit // 2))
        self.retry_after, self.idle_check = retry_after, idle_check
        self.retention, self.prune_every = retention, prune_every
        self.on_wake = list(on_wake)
        self.position: int | None = None  # the last event id fanned out; None until open()
        self._subscribers: set[Subscriber] = set()
        self._watchers: dict[int, set[ProgressWatcher]] = {}
        self._conn: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._called_through = 0  # the on_wake callbacks have seen every event up to this id
        self.wakeups = 0
        self.delivered = 0  # events queued to subscribers (counted per subscriber)
        self.overflows = 0  # subscribers closed for falling behind

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def open(self) -> EventHub:
        """LISTEN first, then read the newest id: an event committed in between is not lost to
        the live stream, it is simply at or below the starting position (a resume replays it)."""
        if self.position is not None:
            raise RuntimeError("EventHub.open() called twice")
        await self._connect()
        assert self._conn is not None
        self.position = await latest_event_id(self._conn)
        return self

    async def _connect(self) -> None:
        # Bounded waits: a network path that drops packets silently must not freeze the hub
        # (and the cache's after-commit work with it) until TCP gives up, ~15 min later.
        self._conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT_S, command_timeout=COMMAND_TIMEOUT_S,
                                           server_settings={"application_name": APPLICATION_NAME})
        await self._conn.add_listener(CHANNEL, self._notified)
        await self._conn.add_listener(PROGRESS_CHANNEL, self._progress)

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    def _progress(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            state = orjson.loads(payload)
            watchers = self._watchers.get(int(state["priceListId"]), ())
        except (ValueError, KeyError, TypeError):
            log.warning("event hub: an import progress message that is not ours: %.100s", payload)
            return
        for watcher in list(watchers):
            watcher.update(state)

    def watch_import(self, price_list_id: int) -> ProgressWatcher:
        """Progress messages of the import of one price list, from any instance."""
        watcher = ProgressWatcher(self, price_list_id)
        self._watchers.setdefault(price_list_id, set()).add(watcher)
        return watcher

    def subscribe(self, accepts: Accepts, *, limit: int | None = None) -> Subscriber:
        """A subscriber that receives every accepted event with id > `position` (its `since`)."""
        if self.position is None:
            raise RuntimeError("EventHub.subscribe() before open()")
        subscriber = Subscriber(self, accepts, limit or self.queue_limit, self.position)
        self._subscribers.add(subscriber)
        return subscriber

    def _forget(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def fan_out(self, event: OutboxEvent) -> None:
        for subscriber in list(self._subscribers):
            try:
                wanted = subscriber.accepts(event)
            except Exception as exc:  # a filter's bug ends that subscriber only
                subscriber.close(f"internal error in the subscription's filter: {type(exc).__name__}")
                log.exception("event hub: a subscriber's filter failed")
                continue
            if wanted:
                if subscriber.offer(event):
                    self.delivered += 1
                else:
                    self.overflows += 1

    async def read_new(self) -> int:
        """Reads and fans out every committed event after `position`; returns how many."""
        assert self._conn is not None and self.position is not None
        count = 0
        while True:
            events = await events_after(self._conn, self.position, self.read_batch)
            if events:
                await self._callbacks_through(events[-1].id)
            await self._room_for(len(events))
            for event in events:
                self.fan_out(event)
                self.position = event.id
            count += len(events)
            if len(events) < self.read_batch:
                return count

    async def _room_for(self, count: int) -> None:
        """Waits (up to `slow_grace` seconds) until every subscriber has room for `count` more
        events: a subscriber busy sending a burst is paced, not closed; one still full after
        the grace is closed by `offer` (it cannot keep up)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.slow_grace
        while any(s.pending + count > s.limit for s in self._subscribers):
            left = deadline - loop.time()
            if left <= 0:
                # Behind for the whole grace: closed now, whether or not these events are
                # for it (else one slow subscriber with a narrow filter would hold every batch).
                for subscriber in [s for s in self._subscribers if s.pending + count > s.limit]:
                    subscriber.overflow()
                    self.overflows += 1
                return
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._room.wait()  # set each time a subscriber takes an event

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time() + min(self.prune_every, 5.0)
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    await self._connect()
                self._wake.set()  # events may have committed while not listening
                while self._conn is not None and not self._conn.is_closed():
                    try:
                        # asyncio.timeout, not wait_for (see backends.outbox_listener).
                        async with asyncio.timeout(self.idle_check):
                            await self._wake.wait()
                    except TimeoutError:
                        # is the connection still there? (a timeout ends it: reconnect)
                        await self._conn.fetchval("SELECT 1", timeout=PING_TIMEOUT_S)
                    else:
                        self._wake.clear()
                        self.wakeups += 1
                        await self.read_new()
                    if self.retention is not None and loop.time() >= next_prune:
                        next_prune = loop.time() + self.prune_every
                        await self._prune()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # log, wait, listen again; position is kept, nothing is skipped
                log.warning("event hub: %s; listening again in %.1f s", exc or type(exc).__name__, self.retry_after)
            await self._close_connection()
            await asyncio.sleep(self.retry_after)

    async def _callbacks_through(self, event_id: int) -> None:
        """Runs the after-commit callbacks before fanning out events up to `event_id`: the
        cache then drops what those events invalidate before a subscriber resolves a field."""
        if self.on_wake and event_id > self._called_through:
            assert self._conn is not None
            latest = await latest_event_id(self._conn)  # the callbacks see at least this far
            await self._after_wake()
            self._called_through = latest

    async def _after_wake(self) -> None:
        for callback in self.on_wake:
            try:
                await callback()
            except Exception as exc:
                log.warning("event hub: after-commit callback failed: %s", exc or type(exc).__name__)

    async def _prune(self) -> None:
        assert self._conn is not None and self.retention is not None
        # Batch after batch until a short one (or the round's time is up): one batch per round
        # deleted at most 10,000 events every 10 minutes, less than large imports write.
        deleted = 0
        deadline = asyncio.get_running_loop().time() + PRUNE_BUDGET_S
        try:
            while True:
                batch = await prune_events(self._conn, self.retention, batch=PRUNE_BATCH)
                deleted += batch
                if batch < PRUNE_BATCH or asyncio.get_running_loop().time() >= deadline:
                    break
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            log.warning("event hub: pruning the outbox failed: %s", exc)
        if deleted:
            log.info("event hub: pruned %d events older than %s", deleted, self.retention)

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close(timeout=2))

    async def stop(self) -> None:
        await super().stop()
        for subscriber in list(self._subscribers):
            subscriber.close("the server is shutting down")
        await self._close_connection()
