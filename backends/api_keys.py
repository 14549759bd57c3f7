"""API keys: created, listed, rotated and revoked; stored as a hash; resolved to a Principal.

A key is `mgk_<prefix>_<secret>`: the prefix (8 hex digits) is public and names the key in
lists, logs and the audit log; the secret is 32 random bytes. Only the SHA-256 of the whole
key is stored (a key this random needs no slow hash: there is nothing to guess), so a key is
shown once, when it is created, and never again.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from backends import audit
from backends.postgres import PostgresBackend

SCOPES = ("read", "write", "admin")
KEY_PATTERN = re.compile(r"^mgk_([0-9a-f]{8})_[A-Za-z0-9_-]{40,}$")
DEFAULT_GRACE = timedelta(hours=24)


class ApiKeyError(ValueError):
    """A key-management request that cannot be carried out (unknown prefix, bad scopes...)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key's prefix (or "anonymous"), its scopes, tier and rate-limit identity."""

    actor: str
    scopes: frozenset[str]
    tier: str
    rate_key: str  # what the budget is counted per: the key, else the client's address

    @property
    def anonymous(self) -> bool:
        return self.actor == "anonymous"

    def allows(self, scope: str) -> bool:
        # Scopes are independent (an admin-only key cannot write to the catalog): what a key
        # may do is exactly what it was given.
        return scope in self.scopes


@dataclass(frozen=True)
class ApiKey:
    """A stored key, as listed (never with its secret)."""

    prefix: str
    name: str
    scopes: tuple[str, ...]
    tier: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_to: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ApiKey:
        return cls(prefix=row["prefix"], name=row["name"], scopes=tuple(row["scopes"]), tier=row["tier"],
                   created_at=row["created_at"], expires_at=row["expires_at"], revoked_at=row["revoked_at"],
                   rotated_to=row["rotated_to"])

    def active(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_scopes(scopes: Iterable[str]) -> list[str]:
    """Scopes checked and in canonical order; an unknown one is an ApiKeyError naming it."""
    wanted = [s.strip().lower() for s in scopes if s.strip()]
    unknown = sorted(set(wanted) - set(SCOPES))
    if unknown:
        raise ApiKeyError(f"unknown scope(s) {', '.join(unknown)}: use read, write and/or admin")
    if not wanted:
        raise ApiKeyError("a key needs at least one scope (read, write, admin)")
    return [s for s in SCOPES if s in wanted]


COLUMNS = "prefix, name, scopes, tier, created_at, expires_at, revoked_at, rotated_to"


class ApiKeyStore:
    """Key management in PostgreSQL; every change leaves an audit record with the acting principal."""

    def __init__(self, pg: PostgresBackend) -> None:
        self.pg = pg

    async def create(self, name: str, scopes: Iterable[str], *, tier: str = "standard",
                     expires_at: datetime | None = None, actor: str = "cli") -> tuple[ApiKey, str]:
        """The new key's record and the key itself (shown once)."""
        checked = parse_scopes(scopes)
        if not name.strip():
            raise ApiKeyError("a key needs a name")
        if expires_at is not None and expires_at.tzinfo is None:
            raise ApiKeyError("expiry needs a time zone")
        if expires_at is not None and expires_at <= datetime.now(UTC):
            raise ApiKeyError(f"expiry {expires_at.isoformat()} is in the past")
        key, row = await self._insert(name.strip(), checked, tier, expires_at)
        record = ApiKey.from_row(row)
        await audit.record(self.pg, "createApiKey", {"name": record.name, "scopes": checked, "tier": tier,
                                                     "expiresAt": expires_at.isoformat() if expires_at else None},
                           "ok", {"prefix": record.prefix}, actor=actor)
        return record, key

    async def _insert(self, name: str, scopes: list[str], tier: str, expires_at: datetime | None,
                      conn: Any = None) -> tuple[str, Any]:
        for _ in range(5):  # a prefix collision (1 in 4 billion per pair) just draws again
            prefix = secrets.token_hex(4)
            key = f"mgk_{prefix}_{secrets.token_urlsafe(32)}"
            row = await (conn or self.pg).fetchrow(
                f"INSERT INTO api_keys (prefix, secret_hash, name, scopes, tier, expires_at) "
                f"VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (prefix) DO NOTHING RETURNING {COLUMNS}",
                prefix, hash_key(key), name, scopes, tier, expires_at)
            if row is not None:
                return key, row
        raise ApiKeyError("could not draw a free key prefix")

    async def list(self) -> list[ApiKey]:
        rows = await self.pg.fetch(f"SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id")
        return [ApiKey.from_row(r) for r in rows]

    async def rotate(self, prefix: str, *, grace: timedelta = DEFAULT_GRACE,
                     actor: str = "cli") -> tuple[ApiKey, str]:
        """A new key with the same name, scopes, tier and expiry; the old one stays valid for `grace`."""
        async with self.pg.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow(f"SELECT {COLUMNS} FROM api_keys WHERE prefix = $1 FOR UPDATE", prefix)
            if old is None:
                raise ApiKeyError(f"no key with prefix {prefix!r}")
            current = ApiKey.from_row(old)
            if not current.active():
                raise ApiKeyError(f"key {prefix} is revoked or expired; create a new one instead")
            key, row = await self._insert(current.name, list(current.scopes), current.tier, current.expires_at, conn)
            until = datetime.now(UTC) + grace
            await conn.execute(
                "UPDATE api_keys SET expires_at = least(coalesce(expires_at, $2), $2), rotated_to = $3 "
                "WHERE prefix = $1", prefix, until, row["prefix"])
        record = ApiKey.from_row(row)
        await audit.record(self.pg, "rotateApiKey", {"prefix": prefix, "graceSeconds": grace.total_seconds()},
                           "ok", {"newPrefix": record.prefix}, actor=actor)
        return record, key

    async def revoke(self, prefix: str, *, actor: str = "cli") -> ApiKey:
        row = await self.pg.fetchrow(
            f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE prefix = $1 RETURNING {COLUMNS}",
            prefix)
        if row is None:
            await audit.record(self.pg, "revokeApiKey", {"prefix": prefix}, "rejected",
                               {"error": "no such key"}, actor=actor)
            raise ApiKeyError(f"no key with prefix {prefix!r}")
        await audit.record(self.pg, "revokeApiKey", {"prefix": prefix}, "ok", actor=actor)
        return ApiKey.from_row(row)

    async def find(self, key: str) -> ApiKey | None:
        """The stored record of a presented key (active or not), None when there is none."""
        if KEY_PATTERN.match(key) is None:
            return None
        row = await self.pg.fetchrow(f"SELECT {COLUMNS} FROM api_keys WHERE secret_hash = $1", hash_key(key))
        return ApiKey.from_row(row) if row is not None else None


class KeyRejected(Exception):
    """The presented key is not (or no longer) valid; the message says why, without the secret."""


class PrincipalResolver:
    """Presented key -> Principal, with a short in-process cache so most requests skip PostgreSQL.

    Entries (including "no such key") live `ttl` seconds; `forget()` drops them at once on the
    instance that revoked or rotated a key. Other instances see a revocation within `ttl`
    seconds (KEY_CACHE_TTL_S), and an expiry is checked on every request against the cached
    expiry time, so an expired key is refused the moment it expires.
    """

    def __init__(self, store: ApiKeyStore, *, ttl: float = 5.0, max_entries: int = 10_000,
                 anonymous_scopes: Iterable[str] = ("read",), anonymous_tier: str = "anonymous") -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self.anonymous_scopes = frozenset(anonymous_scopes)
        self.anonymous_tier = anonymous_tier
        self._entries: OrderedDict[bytes, tuple[float, ApiKey | None]] = OrderedDict()
        # Keys with no row are remembered apart (same TTL and bound), so a flood of made-up
        # keys cannot push the real keys' entries out and send every request to PostgreSQL.
        self._unknown: OrderedDict[bytes, tuple[float, ApiKey | None]] = OrderedDict()
        self.lookups = 0  # PostgreSQL look-ups made (tests and the bench read it)

    def anonymous(self, client: str) -> Principal:
        return Principal("anonymous", self.anonymous_scopes, self.anonymous_tier, f"addr:{client}")

    async def resolve(self, key: str) -> Principal:
        """The key's principal; KeyRejected when it is unknown, revoked or expired."""
        digest = hash_key(key)
        now = time.monotonic()
        entry = self._entries.get(digest) or self._unknown.get(digest)
        if entry is None or entry[0] <= now:
            self.lookups += 1
            record = await self.store.find(key)
            entry = (now + self.ttl, record)
            entries = self._entries if record is not None else self._unknown
            (self._unknown if record is not None else self._entries).pop(digest, None)
            entries[digest] = entry
            entries.move_to_end(digest)
            while len(entries) > self.max_entries:
                entries.popitem(last=False)
        record = entry[1]
        if record is None:
            raise KeyRejected("the API key is not valid")
        if record.revoked_at is not None:
            raise KeyRejected(f"the API key {record.prefix} was revoked")
        if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
            raise KeyRejected(f"the API key {record.prefix} expired at {record.expires_at.isoformat()}")
        return Principal(record.prefix, frozenset(record.scopes), record.tier, f"key:{record.prefix}")

    def forget(self) -> None:
        """Drops every cached key (after a revocation or rotation made here)."""
        self._entries.clear()
        self._unknown.clear()
