"""When a cached value may be served: generations read from the event outbox.

The outbox (`events` and the typed events of imports, one id sequence) is the invalidation
log. Its ids become visible in id order (backends.outbox), so the largest committed id is a
generation: a read that starts after generation G has been observed sees every change whose
event id is <= G.

- Every cache entry records the generation observed before its value was read, and tags
  (material:7, supplier:3, list:materials ...).
- Each instance applies the events up to the current generation, remembering per tag the
  last event that touched it. An entry is valid while none of its tags was touched after
  its generation. So a read that started before a commit cannot fill the cache with the old
  value after the invalidation was applied: its generation is older than the event.
- The current generation comes from Redis (a sorted-set score only ever raised, written by
  the writer after commit and before it answers) or, when Redis is absent or down, from
  PostgreSQL itself. A request observes it before its first cached read and first applies
  every event up to it, so a read that starts after a write returned never sees the old
  value, on any instance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from backends.outbox_reader import LATEST_EVENT_SQL, OUTBOX_TABLES
from backends.postgres import PostgresBackend
from backends.redis_link import RedisLink, RedisUnavailable

log = logging.getLogger(__name__)

LATEST_EVENT = LATEST_EVENT_SQL
# What invalidation reads of each table of the outbox (backends.outbox_reader.OUTBOX_TABLES;
# a table missing here fails at import): topic, entity, supplier id, price list id and source,
# the typed events of imports without building their payloads.
_INVALIDATION_COLUMNS = {
    "events": "topic, entity_id, payload->>'supplierId' AS supplier_id, payload->>'priceListId' AS price_list_id, "
              "payload->>'source' AS source",
    "price_change_events": "'price.changed', material_id, supplier_id::text, price_list_id::text, NULL",
    "material_created_events": "'material.created', material_id, NULL, NULL, 'import'",
}
# One ORDER BY id LIMIT per table (as outbox_reader.first_ids_sql), then the merge.
EVENTS_BETWEEN = "SELECT * FROM (" + " UNION ALL ".join(
    f"(SELECT id, {_INVALIDATION_COLUMNS[table]} FROM {table} WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3)"
    for table in OUTBOX_TABLES) + ") e ORDER BY id LIMIT $3"


def tags_of_event(topic: str, entity_id: int | None, supplier_id: Any = None, price_list_id: Any = None,
                  source: Any = None) -> list[str]:
    """The cache tags a change invalidates (see loaders.cached for the tags entries carry)."""
    tags: list[str] = []
    if topic.startswith("material."):
        tags += [f"material:{entity_id}", "list:materials"]
        if source == "import":  # an import may have created the material's category
            tags.append("list:categories")
    elif topic == "price.changed":
        tags += [f"material:{entity_id}", "list:materials", "list:prices"]
        if supplier_id is not None:
            tags.append(f"supplier:{supplier_id}")
        if price_list_id is not None:
            tags.append(f"price_list:{price_list_id}")
    elif topic == "price_list.imported":
        # Every current price of the supplier now points at the new list, and its older
        # lists were superseded: the supplier's tag covers both.
        tags += [f"price_list:{entity_id}", f"supplier:{supplier_id}", "list:categories", "list:materials",
                 "list:prices"]  # every row of the file joined its material's history
    elif topic == "price_list.archived":
        tags += [f"price_list:{entity_id}", f"supplier:{supplier_id}"]
    elif topic.startswith("supplier."):
        tags += [f"supplier:{entity_id}", "list:suppliers"]
    else:  # an event this code does not know: drop everything rather than serve stale values
        tags.append("*")
    return tags


class Freshness:
    """The generation this instance has applied, and which tags changed at which generation."""

    def __init__(self, pg: PostgresBackend, redis: RedisLink | None, *, key_prefix: str,
                 max_events: int = 5000, max_tags: int = 200_000) -> None:
        if max_events < 1 or max_tags < 1:
            raise ValueError(f"max_events and max_tags must be >= 1 (got {max_events}, {max_tags})")
        self.pg, self.redis = pg, redis
        self.gen_key = f"{key_prefix}:generation"
        self.max_events, self.max_tags = max_events, max_tags
        self.applied: int | None = None  # None until the first observation
        self.floor = 0  # entries read before this generation are never valid
        self.touched: dict[str, int] = {}  # tag -> last event id that touched it
        self.events_applied = 0  # events applied after the first observation (the warm-up's burst signal)
        self._lock = asyncio.Lock()
        self._on_reset: list[Callable[[], None]] = []
        self._on_touched: list[Callable[[set[str], bool], None]] = []

    def on_reset(self, callback: Callable[[], None]) -> None:
        """`callback()` runs when the tag history is dropped (every entry older is invalid)."""
        self._on_reset.append(callback)

    def on_touched(self, callback: Callable[[set[str], bool], None]) -> None:
        """`callback(tags, local)` runs after events are applied, with the tags they touched;
        `local` is True when this instance committed them (`committed()`)."""
        self._on_touched.append(callback)

    def valid(self, gen: int, tags: Iterable[str]) -> bool:
        """Whether an entry read at `gen` with `tags` is still current, as far as applied."""
        if gen < self.floor:
            return False
        touched = self.touched
        if touched.get("*", -1) > gen:
            return False
        return all(touched.get(tag, -1) <= gen for tag in tags)

    async def observe(self) -> int:
        """The current generation, with every event up to it applied here first."""
        gen = await self._published()
        if gen is None:
            gen = int(await self.pg.fetchval(LATEST_EVENT))
            await self._publish(gen)
        if self.applied is None or gen > self.applied:
            await self._catch_up(gen)
        # A generation behind what this instance applied (a publish that failed) is still a
        # safe one to read at: entries filled at it are judged against everything applied.
        return gen

    async def committed(self) -> int:
        """After a write committed here: apply its events, then publish the new generation
        (before the writer answers, so any read that starts afterwards observes it)."""
        gen = int(await self.pg.fetchval(LATEST_EVENT))
        await self._catch_up(gen, local=True)
        await self._publish(gen)
        return gen

    async def _published(self) -> int | None:
        if self.redis is None or not self.redis.available:
            return None
        try:
            score = await self.redis.run(lambda r: r.zscore(self.gen_key, "g"))
        except RedisUnavailable:
            return None
        return None if score is None else int(score)

    async def _publish(self, gen: int) -> None:
        if self.redis is None or not self.redis.available:
            return
        try:
            # GT: the score only ever rises, whatever order writers publish in.
            await self.redis.run(lambda r: r.zadd(self.gen_key, {"g": gen}, gt=True))
        except RedisUnavailable:
            log.warning("could not publish cache generation %d: Redis unavailable", gen)

    async def _catch_up(self, gen: int, *, local: bool = False) -> None:
        async with self._lock:  # one catch-up at a time; later callers find it done
            applied = self.applied
            if applied is not None and applied >= gen:
                return
            first = applied is None
            if applied is None:
                # A new instance: the recent history is enough; anything older is invalid.
                applied = max(0, gen - self.max_events)
                self.floor = applied
            rows = await self.pg.fetch(EVENTS_BETWEEN, applied, gen, self.max_events + 1)
            if not first:
                self.events_applied += len(rows)
            if len(rows) > self.max_events:  # a big import: dropping everything is cheaper
                self._reset(gen)
                return
            tags = self.apply(rows)
            self.applied = gen
            if len(self.touched) > self.max_tags:
                self._reset(gen)
            elif tags and not first:
                for callback in self._on_touched:
                    callback(tags, local)

    def apply(self, rows: Sequence[Any]) -> set[str]:
        """Records the events' tags as touched; returns them."""
        touched = self.touched
        tags: set[str] = set()
        for row in rows:
            for tag in tags_of_event(row["topic"], row["entity_id"], row["supplier_id"], row["price_list_id"],
                                     row["source"]):
                touched[tag] = row["id"]
                tags.add(tag)
        return tags

    def _reset(self, gen: int) -> None:
        self.touched.clear()
        self.floor = self.applied = gen
        for callback in self._on_reset:
            callback()
