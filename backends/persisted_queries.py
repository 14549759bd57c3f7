"""Persisted queries: query texts by SHA-256, known to every instance.

Automatic persisted queries (a client sends the hash, then hash + text once) live in Redis
for `ttl` seconds when there is one, in PostgreSQL otherwise (or while Redis is down), and
in a small in-process map in front of both. Registered queries (the allow-list) are rows
of `persisted_queries` with `allowed = true`, written by an admin (CLI or mutation).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from typing import Any

from backends.postgres import PostgresBackend
from backends.redis_link import RedisLink, RedisUnavailable

HASH = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


class PersistedQueryStore:
    """get/put for APQ, register/allowed for the allow-list."""

    def __init__(self, pg: PostgresBackend, redis: RedisLink | None, *, prefix: str, ttl: int = 7 * 86400,
                 l1_entries: int = 2048, allowed_ttl: float = 5.0) -> None:
        self.pg = pg
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl
        self.l1_entries = l1_entries
        self.allowed_ttl = allowed_ttl
        self._texts: OrderedDict[str, str] = OrderedDict()
        self._allowed: dict[str, tuple[float, bool]] = {}

    def _key(self, digest: str) -> str:
        return f"{self.prefix}:pq:{digest}"

    def _remember(self, digest: str, query: str) -> None:
        self._texts[digest] = query
        self._texts.move_to_end(digest)
        while len(self._texts) > self.l1_entries:
            self._texts.popitem(last=False)

    async def get(self, digest: str) -> str | None:
        query = self._texts.get(digest)
        if query is not None:
            return query
        if self.redis is not None:
            try:
                raw: Any = await self.redis.run(lambda r: r.get(self._key(digest)))
                if raw is not None:
                    query = raw.decode()
            except RedisUnavailable:
                pass
        if query is None:
            query = await self.pg.fetchval("SELECT query FROM persisted_queries WHERE sha256 = $1", digest)
        if query is not None:
            self._remember(digest, query)
        return query

    async def put(self, digest: str, query: str) -> None:
        """Stores an automatic persisted query (the caller checked that `digest` is its hash)."""
        self._remember(digest, query)
        if self.redis is not None:
            try:
                await self.redis.run(lambda r: r.set(self._key(digest), query.encode(), ex=self.ttl))
                return
            except RedisUnavailable:
                pass
        await self.pg.execute("INSERT INTO persisted_queries (sha256, query) VALUES ($1, $2) "
                              "ON CONFLICT (sha256) DO NOTHING", digest, query)

    async def register(self, query: str) -> str:
        """Adds a query to the allow-list; returns its hash."""
        digest = sha256_hex(query)
        await self.pg.execute("INSERT INTO persisted_queries (sha256, query, allowed) VALUES ($1, $2, true) "
                              "ON CONFLICT (sha256) DO UPDATE SET allowed = true", digest, query)
        self._remember(digest, query)
        self._allowed[digest] = (time.monotonic() + self.allowed_ttl, True)
        return digest

    async def allowed(self, digest: str) -> bool:
        """Whether the hash is on the allow-list (answers cached for a few seconds)."""
        now = time.monotonic()
        cached = self._allowed.get(digest)
        if cached is not None and (cached[1] or cached[0] > now):
            return cached[1]  # a registration is never withdrawn, so a yes is kept
        found = bool(await self.pg.fetchval("SELECT allowed FROM persisted_queries WHERE sha256 = $1", digest))
        if len(self._allowed) > 10 * self.l1_entries:
            self._allowed.clear()
        self._allowed[digest] = (now + self.allowed_ttl, found)
        return found
