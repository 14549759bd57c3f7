"""Who is calling: `Authorization: Bearer <API key>` resolved to a Principal before GraphQL runs.

Pure ASGI, in front of /graphql, so the lean path, Strawberry's view and the websocket
handshake all find the principal in `scope[PRINCIPAL]`. A bad, revoked or expired key is a
401 here, before anything else; no key means the anonymous principal (read-only, lowest
tier) unless ANONYMOUS=off, which makes it a 401 too. Websocket clients may instead send
the key in `connection_init` (`{"Authorization": "Bearer ..."}`): `principal_from_params`
resolves it for the subscription code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from backends.api_keys import KeyRejected, Principal, PrincipalResolver
from backends.metrics import refused

PRINCIPAL = "materials.principal"
REFUSALS: dict[str, int] = {}  # reason -> count (metrics read it; see middleware.protection.refusals)


def count_refusal(reason: str) -> None:
    REFUSALS[reason] = REFUSALS.get(reason, 0) + 1
    refused(reason)  # materials_rate_limit_refusals_total{reason} on /metrics (backends.metrics)


def bearer(value: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` value (None when there is none)."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class AuthMiddleware:
    """Sets scope[PRINCIPAL] on HTTP and websocket scopes under `path`; passes the rest through."""

    def __init__(self, app: Any, resolver: PrincipalResolver, *, path: str = "/graphql",
                 anonymous: bool = True) -> None:
        self.app = app
        self.resolver = resolver
        self.path = path
        self.anonymous = anonymous

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        client = (scope.get("client") or ("unknown", 0))[0]
        if header is None:
            if not self.anonymous and not _is_page_or_preflight(scope):
                count_refusal("unauthenticated")
                await _refuse(scope, receive, send, "this server does not accept anonymous requests: send "
                              "'Authorization: Bearer <API key>'")
                return
            scope[PRINCIPAL] = self.resolver.anonymous(client)
            await self.app(scope, receive, send)
            return
        key = bearer(header)
        if key is None:
            count_refusal("unauthenticated")
            await _refuse(scope, receive, send, "the Authorization header must be 'Bearer <API key>'")
            return
        try:
            scope[PRINCIPAL] = await self.resolver.resolve(key)
        except KeyRejected as exc:
            count_refusal("unauthenticated")
            await _refuse(scope, receive, send, str(exc))
            return
        await self.app(scope, receive, send)


async def principal_from_params(resolver: PrincipalResolver, params: Mapping[str, Any] | None,
                                current: Principal | None, *, anonymous: bool = True) -> Principal:
    """The principal of a websocket's `connection_init` payload (`Authorization: Bearer ...`,
    or `apiKey`), else the one the handshake already had; KeyRejected when it is not valid."""
    params = params or {}
    raw = params.get("Authorization") or params.get("authorization")
    key = bearer(raw) if isinstance(raw, str) else None
    if key is None and isinstance(params.get("apiKey"), str):
        key = params["apiKey"]
    if raw is not None and key is None:
        raise KeyRejected("the Authorization parameter must be 'Bearer <API key>'")
    if key is not None:
        return await resolver.resolve(key)
    if current is None or (current.anonymous and not anonymous):
        raise KeyRejected("this server does not accept anonymous connections: send "
                          "{\"Authorization\": \"Bearer <API key>\"} in connection_init")
    return current


def _is_page_or_preflight(scope: Any) -> bool:
    """GraphiQL's page (a GET without a query) and CORS preflights carry no data: no key needed."""
    if scope["type"] == "websocket":
        return True  # the key may come in connection_init (CatalogGraphQL.on_ws_connect decides)
    if scope["method"] == "OPTIONS":
        return True
    if scope["method"] != "GET":
        return False
    raw = scope.get("query_string", b"")
    if not raw:
        return True
    # Parameter names as the GraphQL view will read them: decoded (a client could otherwise
    # send `%71uery=` and be served as an anonymous caller past ANONYMOUS=off).
    try:
        names = {name for name, _ in parse_qsl(raw.decode("latin-1"), keep_blank_values=True)}
    except ValueError:
        return False
    return not names & {"query", "extensions", "variables", "operationName"}


async def _refuse(scope: Any, receive: Any, send: Any, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4401, "reason": message[:120]})
        return
    body = orjson.dumps({"errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]})
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b'Bearer realm="graphql"')]})
    await send({"type": "http.response.body", "body": body})
