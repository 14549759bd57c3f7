"""What the admin-only fields use: key management, the audit log, the persisted-query allow-list."""

from __future__ import annotations

from dataclasses import dataclass

from backends.api_keys import ApiKeyStore, PrincipalResolver
from backends.persisted_queries import PersistedQueryStore


@dataclass(frozen=True)
class AdminServices:
    keys: ApiKeyStore
    principals: PrincipalResolver  # its cache is dropped when a key is revoked or rotated here
    persisted: PersistedQueryStore | None = None
