"""The event hub on a real PostgreSQL: events in commit order to every subscriber whose filter
accepts them, nothing lost across a dropped LISTEN connection, bounded queues, pruning."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from backends.event_hub import APPLICATION_NAME, EventHub, SubscriberClosed
from backends.outbox import record_events
from backends.outbox_reader import CursorExpired, check_cursor, prune_events
from backends.postgres import PostgresBackend

WAIT = 30.0


@pytest.fixture
async def hub(empty_catalog: PostgresBackend) -> AsyncIterator[EventHub]:
    hub = EventHub(empty_catalog.dsn, queue_limit=50, retry_after=0.1, idle_check=0.5, slow_grace=0.2)
    await hub.open()
    hub.start()
    try:
        yield hub
    finally:
        await hub.stop()
        await empty_catalog.execute("UPDATE outbox_retention SET pruned_through = 0")


async def write(pg: PostgresBackend, *entities: int, topic: str = "material.updated") -> None:
    async with pg.transaction() as conn:
        await record_events(conn, [(topic, e, {"materialId": e}) for e in entities])


async def take(subscriber: object, count: int) -> list[int]:
    async with asyncio.timeout(WAIT):
        return [(await subscriber.get()).entity_id for _ in range(count)]  # type: ignore[attr-defined]


async def test_subscribers_receive_the_events_their_filter_accepts_in_commit_order(
    hub: EventHub, empty_catalog: PostgresBackend
) -> None:
    everything = hub.subscribe(lambda e: True)
    even = hub.subscribe(lambda e: e.entity_id % 2 == 0)
    # Writers committing at the same time: ids still arrive in order (the outbox lock).
    await asyncio.gather(*(write(empty_catalog, i, i + 100) for i in range(1, 21)))
    events = [await everything.get() for _ in range(40)]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert sorted(e.entity_id for e in events) == sorted([*range(1, 21), *range(101, 121)])
    evens = await take(even, 20)
    assert all(entity % 2 == 0 for entity in evens)
    assert even.pending == 0 and everything.pending == 0


async def test_events_committed_while_the_listen_connection_was_down_are_not_lost(
    hub: EventHub, empty_catalog: PostgresBackend, conn: asyncpg.Connection
) -> None:
    subscriber = hub.subscribe(lambda e: True)
    await write(empty_catalog, 1)
    assert await take(subscriber, 1) == [1]
    terminated = await conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 "
        "AND datname = current_database()", APPLICATION_NAME)
    assert terminated == 1
    await write(empty_catalog, 2)  # nobody listens at this moment
    await write(empty_catalog, 3)
    assert await take(subscriber, 2) == [2, 3]


async def test_a_subscriber_whose_queue_stays_full_is_closed_with_the_reason(
    hub: EventHub, empty_catalog: PostgresBackend
) -> None:
    stuck = hub.subscribe(lambda e: True)  # never reads
    reader = hub.subscribe(lambda e: True)
    await write(empty_catalog, *range(1, 121))  # more than the queue limit (50) in one commit
    assert await take(reader, 120) == list(range(1, 121))  # paced in batches, a reader keeps up
    assert stuck.closed is not None and "fell behind: 50 events were waiting" in stuck.closed
    assert stuck.pending == 0  # what it had queued was let go
    with pytest.raises(SubscriberClosed, match="fell behind"):
        await stuck.get()
    assert hub.overflows == 1 and hub.subscribers == 1


async def test_a_stuck_subscriber_with_a_narrow_filter_does_not_hold_the_others_back(
    hub: EventHub, empty_catalog: PostgresBackend
) -> None:
    narrow = hub.subscribe(lambda e: e.entity_id == 1)  # never reads
    reader = hub.subscribe(lambda e: True)
    await write(empty_catalog, *([1] * 40))  # its queue: 40 of 50
    await write(empty_catalog, *range(2, 62))  # none for it, but a batch of 25 would not fit
    assert len(await take(reader, 100)) == 100
    assert narrow.closed is not None and "fell behind: 40 events were waiting" in narrow.closed


async def test_pruning_removes_old_events_and_expires_the_cursors_before_them(
    hub: EventHub, empty_catalog: PostgresBackend, conn: asyncpg.Connection
) -> None:
    await write(empty_catalog, 1, 2, 3)
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM events ORDER BY id")]
    await conn.execute("UPDATE events SET created_at = now() - interval '2 hours' WHERE id <= $1", ids[1])
    assert await prune_events(conn, timedelta(hours=1)) == 2  # the two old ones, not the new one
    assert [r["id"] for r in await conn.fetch("SELECT id FROM events ORDER BY id")] == ids[2:]
    await check_cursor(conn, ids[1])  # nothing after it was pruned: resumable
    with pytest.raises(CursorExpired, match="were removed"):
        await check_cursor(conn, ids[0])
    with pytest.raises(CursorExpired, match="newer than the newest event"):
        await check_cursor(conn, ids[2] + 10)


async def test_pruning_stops_at_a_search_indexers_cursor(empty_catalog: PostgresBackend, conn: asyncpg.Connection) -> None:
    await write(empty_catalog, 1, 2, 3)
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM events ORDER BY id")]
    await conn.execute("INSERT INTO index_cursors (consumer, last_event_id) VALUES ('text', $1)", ids[0])
    try:
        assert await prune_events(conn, timedelta(0)) == 1  # the indexer has not read the others yet
    finally:
        await conn.execute("DELETE FROM index_cursors WHERE consumer = 'text'")
        await conn.execute("UPDATE outbox_retention SET pruned_through = 0")


async def test_a_pruning_round_deletes_batch_after_batch_until_the_old_events_are_gone(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    import backends.event_hub as event_hub

    monkeypatch.setattr(event_hub, "PRUNE_BATCH", 40)  # review: one 10,000-event batch per 10 minutes
    await write(empty_catalog, *range(1, 131))
    await conn.execute("UPDATE events SET created_at = now() - interval '2 hours'")
    await write(empty_catalog, 999)  # recent: kept
    hub = EventHub(empty_catalog.dsn, retention=timedelta(hours=1))
    await hub.open()
    try:
        await hub._prune()
    finally:
        await hub.stop()
        await conn.execute("UPDATE outbox_retention SET pruned_through = 0")
    assert [r["entity_id"] for r in await conn.fetch("SELECT entity_id FROM events")] == [999]
