"""Keeping search's indexes in step with the catalog, driven by the event outbox.

Two consumers, each with its own cursor in `index_cursors`:

- `TextIndexer` rebuilds `material_search` rows (the text side's documents) for the materials
  that events name: one set-based statement per batch, in the transaction that moves its cursor.
- `VectorIndexer` embeds the materials that were created or changed, in batches, and upserts
  them with their filter payload (category path, unit, suppliers, best price); price events
  refresh payloads only; deleted materials leave the index.

Both run after the change committed (imports and mutations never wait for them) and are
idempotent: an event applied twice gives the same state. A consumer with no cursor, or a
vector collection found empty while the catalog is not, starts with a full rebuild from
PostgreSQL (`reindex`). Reads never trust the indexes for liveness or filters: search joins
`materials` again, so a deleted material is never returned, even before its event is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from backends.background import BackgroundJob
from backends.embedder import Embedder
from backends.outbox_reader import first_ids_sql, latest_event_id
from backends.postgres import PostgresBackend
from backends.vectors import VectorIndex, VectorIndexError, VectorPayload, VectorPoint, collection_name

log = logging.getLogger(__name__)

MATERIAL_TOPICS = ("material.created", "material.updated", "material.deleted")
Progress = Callable[[int, int], None]


async def _cursor(conn: asyncpg.Connection, consumer: str) -> int | None:
    return await conn.fetchval("SELECT last_event_id FROM index_cursors WHERE consumer = $1", consumer)


async def _set_cursor(conn: asyncpg.Connection, consumer: str, event_id: int, detail: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO index_cursors (consumer, last_event_id, detail) VALUES ($1, $2, $3::jsonb) "
        "ON CONFLICT (consumer) DO UPDATE SET last_event_id = excluded.last_event_id, "
        "detail = excluded.detail, updated_at = now()",
        consumer, event_id, detail,
    )


async def _events_after(conn: asyncpg.Connection, after: int, limit: int,
                        topics: Sequence[str]) -> tuple[int, list[asyncpg.Record]]:
    """Events after the cursor (up to `limit` ids), and the last id looked at."""
    rows = await conn.fetch(
        f"SELECT id, topic, entity_id FROM outbox WHERE id = ANY(ARRAY({first_ids_sql('id > $1', '$2')})) ORDER BY id",
        after, limit)
    if not rows:
        return after, []
    return rows[-1]["id"], [r for r in rows if r["topic"] in topics]


class _Followed:
    """What an indexer tells search when its index may have changed: `on_change()` runs after
    it wrote (once committed), and whenever the cursor it reads moved since it last looked
    (another instance applied events), so search's reuse of recent results
    (backends.search.RecentResults) never outlives a change of the indexes by more than the
    indexer loop's interval."""

    consumer: str
    on_change: Callable[[], None] | None = None
    _seen: int | None = None

    def _saw(self, cursor: int | None) -> None:
        if cursor != self._seen:
            self._seen = cursor
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


async def follow_cursors(pg: PostgresBackend, indexers: Sequence[_Followed]) -> None:
    """For a process that runs no indexer (SEARCH_INDEXER off): reads where each indexer's
    cursor is, so a cursor moved by the process that does index drops reused results here too."""
    async with pg.pool.acquire() as conn:
        cursors = dict(await conn.fetch("SELECT consumer, last_event_id FROM index_cursors WHERE consumer = ANY($1::text[])",
                                        [i.consumer for i in indexers]))
    for indexer in indexers:
        indexer._saw(cursors.get(indexer.consumer))


_DOCUMENTS = """
    INSERT INTO material_search (material_id, name_norm, document)
    SELECT m.id, search_split(m.name), material_document(m.name, m.sku, m.description)
    FROM materials m WHERE m.deleted_at IS NULL {where}
    ON CONFLICT (material_id) DO UPDATE SET name_norm = excluded.name_norm, document = excluded.document
"""

# Words (letters only, three or more) of the documents' names, counted into the vocabulary.
_WORDS = """
    INSERT INTO search_words (word, ndoc)
    SELECT u.lexeme, count(*) FROM material_search s, unnest(to_tsvector('simple', s.name_norm)) u
    WHERE u.lexeme ~ '^[[:alpha:]]{{3,}}$' {where}
    GROUP BY u.lexeme
    ON CONFLICT (word) DO UPDATE SET ndoc = search_words.ndoc + excluded.ndoc
"""


_MERGE_PENDING = """
    SELECT gin_clean_pending_list(i::regclass)
    FROM unnest(ARRAY['material_search_document_idx', 'material_search_name_trgm_idx', 'search_words_trgm_idx']) i
"""


class TextIndexer(_Followed):
    """`material_search` from the outbox: documents of created/updated materials, deletions."""

    consumer = "text"

    def __init__(self, pg: PostgresBackend, *, batch: int = 5000,
                 on_change: Callable[[], None] | None = None) -> None:
        self.pg, self.batch, self.on_change = pg, batch, on_change

    async def rebuild(self) -> int:
        """All documents from the catalog, in one transaction; the cursor moves to the newest event."""
        async with self.pg.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('search-index:text'))")
            last = await latest_event_id(conn)
            await conn.execute("TRUNCATE material_search, search_words")
            await conn.execute(_DOCUMENTS.format(where=""))
            await conn.execute(_WORDS.format(where=""))
            count = await conn.fetchval("SELECT count(*) FROM material_search")
            await _set_cursor(conn, self.consumer, last, {"documents": count})
        self._seen = last
        self._changed()
        # Fresh statistics, or the planner guesses at the new table (seconds-long plans at 40k rows);
        # and the GIN indexes' pending entries merged, which every search would scan otherwise
        # (migration 0014).
        async with self.pg.pool.acquire() as conn:
            await conn.execute("ANALYZE material_search, search_words")
            await conn.execute(_MERGE_PENDING)
        return int(count)

    async def run_once(self) -> int:
        """Applies the events after the cursor (one batch); returns how many events it looked at."""
        async with self.pg.pool.acquire() as conn, conn.transaction():
            # One instance at a time; the others find nothing left to do.
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext('search-index:text'))"):
                return 0
            cursor = await _cursor(conn, self.consumer)
            if cursor is not None:
                self._saw(cursor)
                last, events = await _events_after(conn, cursor, self.batch, MATERIAL_TOPICS)
                if last == cursor:
                    return 0
                ids = sorted({e["entity_id"] for e in events if e["entity_id"] is not None})
                if ids:
                    await conn.execute("DELETE FROM material_search WHERE material_id = ANY($1::bigint[])", ids)
                    await conn.execute(_DOCUMENTS.format(where="AND m.id = ANY($1::bigint[])"), ids)
                    await conn.execute(_WORDS.format(where="AND s.material_id = ANY($1::bigint[])"), ids)
                await _set_cursor(conn, self.consumer, last, {"applied": len(ids)})
        if cursor is not None:  # committed
            self._saw(last)
            return last - cursor
        await self.rebuild()
        return 1


_PAYLOADS = """
    SELECT m.id, m.name, m.description, m.unit_code, c.path AS category_path, c.name AS category_name,
           cp.supplier_ids, cp.best_price
    FROM materials m
    LEFT JOIN categories c ON c.id = m.category_id
    LEFT JOIN LATERAL (
        SELECT array_agg(DISTINCT p.supplier_id) AS supplier_ids,
               min(p.unit_price) FILTER (WHERE p.currency = 'RUB') AS best_price
        FROM current_prices p WHERE p.material_id = m.id
    ) cp ON true
    WHERE m.deleted_at IS NULL AND m.id = ANY($1::bigint[])
"""


def passage_text(row: asyncpg.Record) -> str:
    """What is embedded for a material: its name, its category, the start of its description."""
    parts = [row["name"]]
    if row["category_name"]:
        parts.append(row["category_name"])
    if row["description"]:
        parts.append(row["description"][:300])
    return ". ".join(parts)


def payload_of(row: asyncpg.Record) -> VectorPayload:
    return VectorPayload(
        category_path=tuple(row["category_path"] or ()),
        unit=row["unit_code"],
        supplier_ids=tuple(sorted(row["supplier_ids"] or ())),
        best_price=float(row["best_price"]) if row["best_price"] is not None else None,
    )


class VectorIndexer(_Followed):
    """The vector collection of one model from the outbox: embeddings, payloads, deletions."""

    def __init__(self, pg: PostgresBackend, embedder: Embedder, index: VectorIndex, *,
                 batch: int = 256, events_batch: int = 5000, on_change: Callable[[], None] | None = None) -> None:
        self.pg, self.embedder, self.index = pg, embedder, index
        self.batch, self.events_batch, self.on_change = batch, events_batch, on_change
        self.consumer = f"vectors:{index.kind}:{collection_name(embedder.model_id)}"

    async def _embed(self, ids: Sequence[int]) -> int:
        """Embeds and upserts the live materials among `ids`; removes the others from the index."""
        written = 0
        for start in range(0, len(ids), self.batch):
            chunk = list(ids[start:start + self.batch])
            async with self.pg.pool.acquire() as conn:
                rows = await conn.fetch(_PAYLOADS, chunk)
            live = {r["id"] for r in rows}
            gone = [i for i in chunk if i not in live]
            if rows:
                vectors = await self.embedder.passages([passage_text(r) for r in rows])
                await self.index.upsert([VectorPoint(r["id"], v, payload_of(r))
                                         for r, v in zip(rows, vectors, strict=True)])
                written += len(rows)
            if gone:
                await self.index.delete(gone)
            self._changed()
        return written

    async def rebuild(self, progress: Progress | None = None) -> int:
        """Every live material, embedded again; the cursor moves to the event newest at the start."""
        async with self.pg.pool.acquire() as conn:
            last = await latest_event_id(conn)
            ids = [r["id"] for r in await conn.fetch(
                "SELECT id FROM materials WHERE deleted_at IS NULL ORDER BY id")]
        await self.index.clear()
        done = 0
        for start in range(0, len(ids), self.batch * 4):
            done += await self._embed(ids[start:start + self.batch * 4])
            if progress is not None:
                progress(min(start + self.batch * 4, len(ids)), len(ids))
        async with self.pg.pool.acquire() as conn:
            await _set_cursor(conn, self.consumer, last, {"points": done, "model": self.embedder.model_id})
        self._seen = last
        self._changed()
        return done

    async def needs_rebuild(self) -> bool:
        async with self.pg.pool.acquire() as conn:
            cursor = await _cursor(conn, self.consumer)
            if cursor is None:
                return True
            if await self.index.count() == 0:
                return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM materials WHERE deleted_at IS NULL)"))
        return False

    async def run_once(self) -> int:
        """Applies one batch of events after the cursor; returns how many event ids it moved over."""
        async with self.pg.pool.acquire() as conn:
            cursor = await _cursor(conn, self.consumer)
            if cursor is None:
                return 0
            self._saw(cursor)
            last, events = await _events_after(conn, cursor, self.events_batch, (*MATERIAL_TOPICS, "price.changed"))
        if last == cursor:
            return 0
        changed = sorted({e["entity_id"] for e in events
                          if e["topic"] != "price.changed" and e["entity_id"] is not None})
        priced = sorted({e["entity_id"] for e in events
                         if e["topic"] == "price.changed" and e["entity_id"] is not None} - set(changed))
        await self._embed(changed)
        if priced:
            async with self.pg.pool.acquire() as conn:
                rows = await conn.fetch(_PAYLOADS, priced)
            live = {r["id"] for r in rows}
            try:
                await self.index.set_payloads([(r["id"], payload_of(r)) for r in rows])
            except VectorIndexError:
                # A point the index does not hold (its earlier embedding failed): write it whole.
                await self._embed([r["id"] for r in rows])
            gone = [i for i in priced if i not in live]
            if gone:
                await self.index.delete(gone)
        # The index changed before the cursor moves: results read meanwhile are not kept either.
        self._changed()
        async with self.pg.pool.acquire() as conn:
            await _set_cursor(conn, self.consumer, last, {"embedded": len(changed), "payloads": len(priced)})
        self._saw(last)
        return last - cursor


class IndexerLoop(BackgroundJob):
    """Runs the indexers in the background of a server: catch up, then poll the outbox."""

    task_name = "search-indexers"

    def __init__(self, steps: Sequence[tuple[str, Callable[[], Awaitable[int]]]], *, interval: float = 0.5) -> None:
        self.steps, self.interval = steps, interval
        super().__init__()
        self.wake = asyncio.Event()
        self.errors = 0

    async def _run(self) -> None:
        while True:
            busy = False
            for name, step in self.steps:
                started = time.perf_counter()
                try:
                    moved = await step()
                except asyncio.CancelledError:
                    raise
                except Exception:  # an unavailable backend: retried on the next round
                    self.errors += 1
                    log.exception("search indexer %s failed; retrying", name)
                    moved = 0
                if moved:
                    busy = True
                    log.debug("search indexer %s: %d events in %.1f ms", name, moved,
                              (time.perf_counter() - started) * 1000)
            if not busy:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
                # arrives as the wake-up does, and stop() would then wait for ever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await self.wake.wait()
                self.wake.clear()
