"""API keys for tests, written straight into api_keys (the store's own tests create them through it)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from backends.api_keys import hash_key


async def make_key(conn: Any, scopes: Sequence[str] = ("read",), *, tier: str = "standard",
                   expires_at: datetime | None = None, name: str = "test key") -> str:
    prefix = secrets.token_hex(4)
    key = f"mgk_{prefix}_{secrets.token_urlsafe(32)}"
    await conn.execute("INSERT INTO api_keys (prefix, secret_hash, name, scopes, tier, expires_at) "
                       "VALUES ($1, $2, $3, $4, $5, $6)", prefix, hash_key(key), name, list(scopes), tier, expires_at)
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
