"""Reading the event outbox in id order, and pruning it past its retention.

Ids become visible in id order (backends.outbox), so `id > cursor` read after a commit
notification never passes over an event that commits later. Events are read from the view
`outbox` (migrations/0011, 0013): `events` and the typed events of imports, in one id order.
Pruning removes a prefix of the outbox and records the largest id removed
(`outbox_retention.pruned_through`): a cursor at or above it resumes exactly, one below it
has lost events (CursorExpired).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

# payload_text: the payload as JSON text; the typed tables' is put together as text, which
# costs the server a third of building their jsonb payload and printing it (migrations/0011).
EVENT_COLUMNS = "id, topic, entity_id, payload_text AS payload, created_at"
# The tables of the outbox, which share one id sequence (migrations/0011, 0013), and the topic
# of their rows (a column of `events`, a constant of the others).
OUTBOX_TOPICS = {"events": "topic", "price_change_events": "'price.changed'",
                 "material_created_events": "'material.created'"}
OUTBOX_TABLES = tuple(OUTBOX_TOPICS)
# The newest event id of any of them (each max() an index lookup).
LATEST_EVENT_SQL = "SELECT greatest(" + ", ".join(
    f"(SELECT coalesce(max(id), 0) FROM {table})" for table in OUTBOX_TABLES) + ")"


def first_ids_sql(where: str, limit: str, *, topics: str | None = None, columns: str = "id") -> str:
    """SQL of the first `limit` outbox rows in id order whose id satisfies `where` (and whose
    topic is in the array `topics`), as `columns` (columns every table has: id, created_at).

    One `ORDER BY id LIMIT` per table, then the merge: each table reads at most `limit` rows
    by its primary key whatever its statistics say. Through the view, a table that an import
    had just filled (not analysed yet) was planned as an append + sort of every row after the
    cursor, payloads included: each batch of 1000 events read all the rest."""
    branches = []
    for table, topic in OUTBOX_TOPICS.items():
        condition = where if topics is None else f"{topic} = ANY({topics}) AND {where}"
        branches.append(f"(SELECT {columns} FROM {table} WHERE {condition} ORDER BY id LIMIT {limit})")
    return f"SELECT {columns} FROM ({' UNION ALL '.join(branches)}) b ORDER BY id LIMIT {limit}"
PRUNE_LOCK = 7_107_500_061  # pg_advisory_xact_lock key: one instance prunes at a time


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One committed outbox row; shared (never copied) by every subscriber it is fanned out to."""

    id: int
    topic: str
    entity_id: int | None
    payload: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> OutboxEvent:
        return cls(row["id"], row["topic"], row["entity_id"], orjson.loads(row["payload"]), row["created_at"])


class CursorExpired(Exception):
    """The events after a cursor were pruned (or the cursor is from another outbox)."""


async def latest_event_id(conn: Any) -> int:
    return int(await conn.fetchval(LATEST_EVENT_SQL))


async def events_after(conn: Any, after: int, limit: int, *, through: int | None = None,
                       topics: Sequence[str] | None = None) -> list[OutboxEvent]:
    """Up to `limit` events with `after < id <= through`, in id order, of the given topics."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1 (got {limit})")
    bound = through if through is not None else 2**63 - 1
    # The ids first (first_ids_sql), then the payloads of those rows only.
    if topics is None:
        ids = first_ids_sql("id > $1 AND id <= $2", "$3")
        rows = await conn.fetch(f"SELECT {EVENT_COLUMNS} FROM outbox WHERE id = ANY(ARRAY({ids})) ORDER BY id",
                                after, bound, limit)
    else:
        # `events` through its (topic, id) index; a typed table whose topic is not asked for is
        # skipped: a replay of price events reads no other.
        ids = first_ids_sql("id > $2 AND id <= $3", "$4", topics="$1::text[]")
        rows = await conn.fetch(f"SELECT {EVENT_COLUMNS} FROM outbox WHERE id = ANY(ARRAY({ids})) ORDER BY id",
                                list(topics), after, bound, limit)
    return [OutboxEvent.from_row(r) for r in rows]


async def check_cursor(conn: Any, after: int) -> None:
    """Raises CursorExpired when events after `after` may have been pruned, or `after` is
    beyond the newest event (a cursor of another database, or of an outbox that was reset)."""
    row = await conn.fetchrow(
        f"SELECT (SELECT pruned_through FROM outbox_retention) AS pruned, ({LATEST_EVENT_SQL}) AS latest")
    pruned = row["pruned"] or 0
    if after < pruned:
        raise CursorExpired(f"the events after this cursor (event {after}) were removed: the outbox keeps events "
                            f"only for its retention period and now starts after event {pruned}")
    if after > row["latest"]:
        raise CursorExpired(f"this cursor (event {after}) is newer than the newest event ({row['latest']}): "
                            "it does not belong to this outbox")


async def prune_events(conn: asyncpg.Connection, retention: timedelta, *, batch: int = 10_000,
                       now: datetime | None = None) -> int:
    """Deletes the oldest events created more than `retention` ago, a prefix of at most `batch`
    ids, never past a search indexer's cursor; returns how many were deleted. One instance at a
    time (an advisory lock; the others return 0)."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", PRUNE_LOCK):
            return 0
        cutoff = (now or await conn.fetchval("SELECT now()")) - retention
        upto = await conn.fetchval(
            f"""
            WITH head AS ({first_ids_sql("true", "$1", columns="id, created_at")})
            SELECT least(
                coalesce((SELECT min(id) - 1 FROM head WHERE created_at >= $2), (SELECT max(id) FROM head)),
                (SELECT min(last_event_id) FROM index_cursors))
            """, batch, cutoff)
        if upto is None:
            return 0
        deleted = 0
        for table in OUTBOX_TABLES:
            status = await conn.execute(f"DELETE FROM {table} WHERE id <= $1", upto)
            deleted += int(status.split()[-1])
        if deleted:
            await conn.execute("UPDATE outbox_retention SET pruned_through = greatest(pruned_through, $1)", upto)
        return deleted
