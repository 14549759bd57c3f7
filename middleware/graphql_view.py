"""The Strawberry ASGI view: context per request, orjson responses, GraphiQL from local assets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from middleware.graphiql import GraphiQLAssets


class CatalogGraphQL(GraphQL):
    """GraphQL over HTTP (GET for queries, POST) and websockets, with a per-request context."""

    def __init__(
        self,
        schema: Any,
        *,
        context_factory: Callable[[Request | WebSocket, Response | WebSocket | None], Any],
        graphiql: GraphiQLAssets | None,
        graphiql_enabled: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(schema, graphql_ide="graphiql" if graphiql_enabled else None, **kwargs)
        self._context_factory = context_factory
        self._graphiql_page = graphiql.page() if graphiql else None

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Any:
        return self._context_factory(request, response)

    async def render_graphql_ide(self, request: Request) -> Response:
        if self._graphiql_page is None:
            return await super().render_graphql_ide(request)
        return HTMLResponse(self._graphiql_page)

    def encode_json(self, data: object) -> bytes:
        # orjson writes UTF-8 as is: Cyrillic stays 2 bytes a letter instead of a 6-byte \\u escape.
        return orjson.dumps(data)
