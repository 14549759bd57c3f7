"""Admin-only fields: API keys, the audit log, the persisted-query allow-list.

Each declares `metadata={"scope": "admin"}`; the guard (middleware.protection) refuses the
whole operation before it runs when the caller's key lacks that scope, and `_services`
checks again here so no path reaches these resolvers without it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

import strawberry
from strawberry.scalars import JSON

from backends import audit
from backends.api_keys import ApiKey as ApiKeyRecord
from backends.api_keys import ApiKeyError
from resolvers.admin import AdminServices
from resolvers.context import Context
from resolvers.errors import InvalidArgument
from resolvers.pagination import decode_cursor, encode_cursor
from schema.mutation import ErrorCode, UserError
from schema.node import PageInfo

ADMIN = {"scope": "admin"}


@strawberry.enum(description="What an API key may do: read the catalog, write to it, manage keys and read the audit.")
class ApiScope(Enum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


@strawberry.type(description="An API key as listed: never its secret, which is shown once when it is created.")
class ApiKey:
    prefix: str
    name: str
    scopes: list[ApiScope]
    tier: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_to: str | None = strawberry.field(description="The prefix of the key that replaced this one.")
    active: bool

    @classmethod
    def of(cls, record: ApiKeyRecord) -> ApiKey:
        return cls(prefix=record.prefix, name=record.name, scopes=[ApiScope(s) for s in record.scopes],
                   tier=record.tier, created_at=record.created_at, expires_at=record.expires_at,
                   revoked_at=record.revoked_at, rotated_to=record.rotated_to, active=record.active())


@strawberry.type
class ApiKeyPayload:
    api_key: ApiKey | None
    key: str | None = strawberry.field(description="The new key itself: shown in this answer only, never again.")
    errors: list[UserError]


@strawberry.type
class AuditEntry:
    id: strawberry.ID
    at: datetime
    actor: str = strawberry.field(description="The API key's prefix, 'anonymous', or 'cli'.")
    operation: str
    variables: JSON | None
    outcome: str
    detail: JSON | None


@strawberry.type
class AuditEntryEdge:
    cursor: str
    node: AuditEntry


@strawberry.type
class AuditLogConnection:
    edges: list[AuditEntryEdge]
    page_info: PageInfo


@strawberry.input
class AuditLogFilter:
    operation: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@strawberry.type
class PersistedQueryPayload:
    sha256_hash: str | None
    errors: list[UserError]


def _services(info: strawberry.Info[Context, None]) -> AdminServices:
    context = info.context
    if context.principal is None or not context.principal.allows("admin"):
        raise InvalidArgument([], "this field needs the 'admin' scope", code="FORBIDDEN")
    if context.admin is None:
        raise InvalidArgument([], "key management is not available on this server", code="UNAVAILABLE")
    return context.admin


def _failed(exc: ApiKeyError, field: str) -> ApiKeyPayload:
    return ApiKeyPayload(api_key=None, key=None, errors=[UserError(field=[field], message=str(exc),
                                                                   code=ErrorCode.VALIDATION)])


@strawberry.type
class AdminQuery:
    @strawberry.field(description="Every API key (admin).", metadata=ADMIN)
    async def api_keys(self, info: strawberry.Info[Context, None]) -> list[ApiKey]:
        return [ApiKey.of(k) for k in await _services(info).keys.list()]

    @strawberry.field(description="Mutations and key changes, newest first (admin).", metadata=ADMIN)
    async def audit_log(self, info: strawberry.Info[Context, None], filter: AuditLogFilter | None = None,
                        first: int | None = 20, after: str | None = None) -> AuditLogConnection:
        services = _services(info)
        size = 20 if first is None else first
        if size < 0 or size > info.context.max_page_size:
            raise InvalidArgument(["first"], f"must be between 0 and {info.context.max_page_size} (got {size})")
        before_id = decode_cursor(after, "audit", "after").id if after is not None else None
        f = filter or AuditLogFilter()
        for name, value in (("since", f.since), ("until", f.until)):
            if value is not None and value.tzinfo is None:
                raise InvalidArgument(["filter", name], "needs a time zone (e.g. 2024-01-01T00:00:00Z)")
        rows = await audit.read(services.keys.pg, operation=f.operation, actor=f.actor, since=f.since, until=f.until,
                                before_id=before_id, limit=size + 1)
        more, rows = len(rows) > size, rows[:size]
        edges = [AuditEntryEdge(cursor=encode_cursor("audit", r["id"], r["id"]), node=AuditEntry(
            id=strawberry.ID(str(r["id"])), at=r["at"], actor=r["actor"], operation=r["operation"],
            variables=r["variables"], outcome=r["outcome"], detail=r["detail"])) for r in rows]
        return AuditLogConnection(edges=edges, page_info=PageInfo(
            has_next_page=more, has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None, end_cursor=edges[-1].cursor if edges else None))


@strawberry.type
class AdminMutation:
    @strawberry.mutation(description="A new API key (admin); the answer holds the key, shown this once.",
                         metadata=ADMIN)
    async def create_api_key(self, info: strawberry.Info[Context, None], name: str, scopes: list[ApiScope],
                             tier: str = "standard", expires_at: datetime | None = None) -> ApiKeyPayload:
        services = _services(info)
        try:
            record, key = await services.keys.create(name, [s.value for s in scopes], tier=tier, expires_at=expires_at,
                                                     actor=info.context.actor)
        except ApiKeyError as exc:
            return _failed(exc, "scopes" if "scope" in str(exc) else "expiresAt" if "expir" in str(exc) else "name")
        return ApiKeyPayload(api_key=ApiKey.of(record), key=key, errors=[])

    @strawberry.mutation(description="Replaces a key (admin); the old one keeps working for graceSeconds.",
                         metadata=ADMIN)
    async def rotate_api_key(self, info: strawberry.Info[Context, None], prefix: str,
                             grace_seconds: int = 86400) -> ApiKeyPayload:
        services = _services(info)
        if grace_seconds < 0:
            return _failed(ApiKeyError(f"must not be negative (got {grace_seconds})"), "graceSeconds")
        try:
            record, key = await services.keys.rotate(prefix, grace=timedelta(seconds=grace_seconds),
                                                     actor=info.context.actor)
        except ApiKeyError as exc:
            return _failed(exc, "prefix")
        services.principals.forget()
        return ApiKeyPayload(api_key=ApiKey.of(record), key=key, errors=[])

    @strawberry.mutation(description="Revokes a key at once (admin).", metadata=ADMIN)
    async def revoke_api_key(self, info: strawberry.Info[Context, None], prefix: str) -> ApiKeyPayload:
        services = _services(info)
        try:
            record = await services.keys.revoke(prefix, actor=info.context.actor)
        except ApiKeyError as exc:
            return _failed(exc, "prefix")
        services.principals.forget()
        return ApiKeyPayload(api_key=ApiKey.of(record), key=None, errors=[])

    @strawberry.mutation(description="Adds an operation to the persisted-query allow-list (admin); returns its hash.",
                         metadata=ADMIN)
    async def register_persisted_query(self, info: strawberry.Info[Context, None], query: str) -> PersistedQueryPayload:
        services = _services(info)
        if services.persisted is None:
            return PersistedQueryPayload(sha256_hash=None, errors=[UserError(
                field=None, message="persisted queries are off on this server", code=ErrorCode.UNAVAILABLE)])
        from graphql import GraphQLError, parse

        try:
            parse(query)
        except GraphQLError as exc:
            return PersistedQueryPayload(sha256_hash=None, errors=[UserError(
                field=["query"], message=exc.message, code=ErrorCode.VALIDATION)])
        digest = await services.persisted.register(query)
        await audit.record(services.keys.pg, "registerPersistedQuery", {"sha256Hash": digest}, "ok",
                           actor=info.context.actor)
        return PersistedQueryPayload(sha256_hash=digest, errors=[])
