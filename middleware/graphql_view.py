"""The Strawberry ASGI view: context per request, orjson responses, GraphiQL from local assets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UNSET

from backends.api_keys import KeyRejected, PrincipalResolver
from middleware.asgi_body import is_json, read_body, replay
from middleware.auth import bearer, principal_from_params
from middleware.graphiql import GraphiQLAssets
from middleware.lean_queries import LeanQueries


class CatalogGraphQL(GraphQL):
    """GraphQL over HTTP (GET for queries, POST) and websockets, with a per-request context."""

    def __init__(
        self,
        schema: Any,
        *,
        context_factory: Callable[[Request | WebSocket, Response | WebSocket | None], Any],
        graphiql: GraphiQLAssets | None,
        graphiql_enabled: bool = True,
        lean_queries: LeanQueries | None = None,
        principals: PrincipalResolver | None = None,
        anonymous: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(schema, graphql_ide="graphiql" if graphiql_enabled else None,
                         multipart_uploads_enabled=True, **kwargs)
        self._context_factory = context_factory
        self._graphiql_page = graphiql.page() if graphiql else None
        self._lean = lean_queries
        self._principals = principals  # issue 7: a websocket's key may come in connection_init
        self._anonymous = anonymous

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and _is_multipart(scope) and not _has_preflight_header(scope):
            # A browser sends multipart forms cross-site without asking (CSRF); a header it would
            # have to ask for proves the request comes from a client that means it.
            response = JSONResponse(
                {"errors": [{"message": "multipart requests (file uploads) need a header "
                             "'GraphQL-Preflight: 1' (or 'Apollo-Require-Preflight')",
                             "extensions": {"code": "VALIDATION"}}]}, status_code=400)
            await response(scope, receive, send)
            return
        if self._lean is not None and scope["type"] == "http" and scope["method"] == "POST" and is_json(scope):
            body = await read_body(receive)
            if await self._lean.handle(scope, receive, send, body):
                return
            receive = replay(body, receive)
        elif (self._lean is not None and scope["type"] == "http" and scope["method"] == "GET"
              and b"query=" in scope.get("query_string", b"")):
            if await self._lean.handle_get(scope, receive, send):
                return
        await super().__call__(scope, receive, send)

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Any:
        return self._context_factory(request, response)

    async def on_ws_connect(self, context: Any) -> Any:
        """connection_init: the key in its payload (if any) decides who the connection acts as."""
        if self._principals is None:
            return UNSET
        resolver, params, initial = self._principals, context.connection_params, context.principal
        header_key = bearer(context.request.headers.get("authorization"))

        async def refresh() -> None:
            # Every operation on the socket asks again (cached for KEY_CACHE_TTL_S), so a key
            # revoked or expired while the socket is open stops working there too.
            current = await resolver.resolve(header_key) if header_key is not None else initial
            context.principal = await principal_from_params(resolver, params, current, anonymous=self._anonymous)

        try:
            await refresh()
        except KeyRejected as exc:
            raise ConnectionRejectionError({"message": str(exc), "code": "UNAUTHENTICATED"}) from None
        context.refresh_principal = refresh
        return UNSET

    async def render_graphql_ide(self, request: Request) -> Response:
        if self._graphiql_page is None:
            return await super().render_graphql_ide(request)
        return HTMLResponse(self._graphiql_page)

    def parse_json(self, data: str | bytes) -> Any:
        parsed = super().parse_json(data)
        if isinstance(parsed, list) and self.schema.config.batching_config is None:
            raise HTTPException(400, "A JSON array (a batch of operations) is not accepted: "
                                     "send one operation per request")
        if not isinstance(parsed, dict | list):
            # Strawberry would fail on it with an AttributeError (a 500); it is the client's mistake.
            raise HTTPException(400, "The request body must be a JSON object (or a list of them for a batch)")
        return parsed

    def encode_json(self, data: object) -> bytes:
        # orjson writes UTF-8 as is: Cyrillic stays 2 bytes a letter instead of a 6-byte \\u escape.
        return orjson.dumps(data)


PREFLIGHT_HEADERS = (b"graphql-preflight", b"apollo-require-preflight", b"x-apollo-operation-name")


def _is_multipart(scope: Any) -> bool:
    return any(k == b"content-type" and v.lower().startswith(b"multipart/") for k, v in scope["headers"])


def _has_preflight_header(scope: Any) -> bool:
    return any(k in PREFLIGHT_HEADERS and v for k, v in scope["headers"])
