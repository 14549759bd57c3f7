"""The event outbox: rows written in the same transaction as the change they describe.

Consumers (subscriptions, cache invalidation) read `events` in id order from a cursor.
Identity values are handed out at insert time, not at commit, so two writers could commit
ids out of order and a reader at `id > 41` could pass over 41 committing late. Every writer
therefore takes OUTBOX_LOCK (transaction-scoped) right before its first event and keeps
it until commit: events become visible in id order. Writers take it last, after their
other work, so the lock is held only for the end of a transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

OUTBOX_LOCK = 7_107_500_001  # pg_advisory_xact_lock key of the outbox


async def lock_outbox(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", OUTBOX_LOCK)


async def record_events(conn: asyncpg.Connection, events: Sequence[tuple[str, int | None, dict[str, Any]]]) -> None:
    """Appends (topic, entity id, payload) events; the caller's transaction decides if they exist."""
    if not events:
        return
    await lock_outbox(conn)
    await conn.execute(
        "INSERT INTO events (topic, entity_id, payload) "
        "SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]::jsonb[])",
        [e[0] for e in events], [e[1] for e in events], [orjson.dumps(e[2]).decode() for e in events],
    )
