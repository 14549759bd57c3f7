"""The common request, straight to graphql-core: a query operation POSTed as JSON or sent by GET.

Strawberry's HTTP view and `schema.execute` cost ~0.35 ms per request on top of graphql-core
(request adapters, extension hooks, result processing); on W2 that was a tenth of the CPU.
This path serves what most clients send (POST, `application/json`, one query operation;
or GET with `query`, `variables` and `operationName` parameters)
with the same schema, execution context, context factory and error formatting, and hands
everything else to Strawberry untouched: other GETs, multipart uploads, batches, mutations,
documents that do not parse or validate (Strawberry formats those errors), unknown
operation names. Tests send every kind of request through both paths and compare the bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from graphql import GraphQLError, OperationType, execute, get_operation_ast, parse, print_ast, specified_rules
from starlette.requests import Request
from starlette.responses import Response
from strawberry.schema.schema import validate_document

from backends.postgres import track_queries
from middleware.observability import note_operation, outcome_of
from middleware.response_cache import ResponseCache

DOCUMENT_CACHE_SIZE = 1024


class LeanQueries:
    """Answers POSTed JSON query operations; `handle` returns False for anything else."""

    def __init__(self, schema: Any, context_factory: Callable[[Any, Any], Any], *, query_stats: bool,
                 responses: ResponseCache | None = None,
                 middleware_for: Callable[[], list[Any] | None] | None = None) -> None:
        self._schema = schema
        self._graphql_schema = schema._schema
        self._executor = schema.execution_context_class
        self._context_factory = context_factory
        self._query_stats = query_stats
        self._responses = responses
        self._middleware_for = middleware_for  # graphql-core middleware per execution (sampled resolver timings)
        # query text -> (parsed document, its normalised text), or None when it does not parse or validate
        self._documents: OrderedDict[str, Any] = OrderedDict()

    def _document(self, query: str) -> Any:
        document = self._documents.get(query, False)
        if document is not False:
            self._documents.move_to_end(query)
            return document
        try:
            parsed = parse(query)
            errors = validate_document(self._graphql_schema, parsed, tuple(specified_rules))
            document = None if errors else (parsed, print_ast(parsed))
        except GraphQLError:
            document = None
        self._documents[query] = document
        if len(self._documents) > DOCUMENT_CACHE_SIZE:
            self._documents.popitem(last=False)
        return document

    async def handle(self, scope: Any, receive: Any, send: Any, body: bytes) -> bool:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(request, dict):
            return False
        return await self._answer(scope, receive, send, request.get("query"), request.get("variables"),
                                  request.get("operationName"))

    async def handle_get(self, scope: Any, receive: Any, send: Any) -> bool:
        """A GET query (`?query=...&variables=<JSON object>&operationName=...`): the same answer,
        and the same response cache, as the POST of the same operation."""
        try:
            pairs = parse_qsl(scope.get("query_string", b"").decode(), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            return False
        params = dict(pairs)
        if len(params) != len(pairs) or not set(params) <= {"query", "variables", "operationName"}:
            return False  # repeated or other parameters (extensions, persisted queries): Strawberry decides
        if params.get("operationName") == "":
            return False
        variables: Any = None
        if "variables" in params:
            try:
                variables = orjson.loads(params["variables"])
            except orjson.JSONDecodeError:
                return False
            if not isinstance(variables, dict):
                return False
        return await self._answer(scope, receive, send, params.get("query"), variables, params.get("operationName"))

    async def _answer(self, scope: Any, receive: Any, send: Any, query: Any, variables: Any, name: Any) -> bool:
        if not isinstance(query, str) or not (variables is None or isinstance(variables, dict)):
            return False
        if not (name is None or isinstance(name, str)):
            return False
        parsed = self._document(query)
        if parsed is None:
            return False
        document, normalised = parsed
        operation = get_operation_ast(document, name)
        if operation is None or operation.operation is not OperationType.QUERY:
            return False

        label = name or (operation.name.value if operation.name else None)
        note_operation(label, "ok")  # the outcome is corrected by _execute (errors) or below (cached)
        context = self._context_factory(Request(scope, receive), None)
        view = getattr(context, "cache", None)
        if self._responses is None or view is None or not self._responses.answers(operation):
            body, _ = await self._execute(document, context, variables, name)
            await Response(body, media_type="application/json")(scope, receive, send)
            return True
        key = (normalised, name, variables or {}, self._responses.scope_of(scope))
        fresh: list[bytes] = []
        stored, hit = await self._responses.serve(
            view, key, lambda: self._execute(document, context, variables, name, stored=fresh))
        # The stored bytes never hold this request's queryStats; a miss answers with them.
        body = stored if hit or not fresh else fresh[0]
        if hit:
            note_operation(label, "cached")
        headers = {"x-cache": "hit" if hit else "miss"}
        await Response(body, media_type="application/json", headers=headers)(scope, receive, send)
        return True

    async def prefetch(self, query: str, name: str | None, variables: dict[str, Any]) -> bool:
        """The warm-up (backends.warmup): runs a query as an anonymous caller through the
        response cache, which stores it under the usual rules; False if it is not a stored kind."""
        parsed = self._document(query)
        if parsed is None or self._responses is None:
            return False
        document, normalised = parsed
        operation = get_operation_ast(document, name)
        if operation is None or operation.operation is not OperationType.QUERY or not self._responses.answers(operation):
            return False
        scope = {"type": "http", "method": "POST", "path": "/graphql", "query_string": b"", "headers": []}

        async def receive() -> Any:
            return {"type": "http.disconnect"}

        context = self._context_factory(Request(scope, receive), None)
        view = getattr(context, "cache", None)
        if view is None:
            return False
        key = (normalised, name, variables or {}, self._responses.scope_of(scope))
        plain: list[bytes] = []  # (the body with queryStats, not kept)
        await self._responses.serve(view, key, lambda: self._execute(document, context, variables, name, stored=plain))
        return True

    async def _execute(self, document: Any, context: Any, variables: dict[str, Any] | None, name: str | None,
                       stored: list[bytes] | None = None) -> tuple[bytes, bool]:
        """The response body, and whether it may be stored (no errors); with `stored`, returns
        the body without queryStats and appends the one with them to `stored`."""
        stats = track_queries() if self._query_stats else None
        middleware = self._middleware_for() if self._middleware_for is not None else None
        result = execute(self._graphql_schema, document, None, context, variables, name,
                         executor_class=self._executor, middleware=middleware)
        if not isinstance(result, dict) and hasattr(result, "__await__"):
            result = await result
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            note_operation(name or _operation_name(document), outcome_of(result.errors))
            self._schema.process_errors(result.errors)
            payload["errors"] = [error.formatted for error in result.errors]
        plain = body = orjson.dumps(payload)
        if stats is not None:
            payload["extensions"] = {"queryStats": {"sqlRoundTrips": stats.round_trips}}
            body = orjson.dumps(payload)
        if stored is None:
            return body, not result.errors
        stored.append(body)
        return plain, not result.errors


def _operation_name(document: Any) -> str | None:
    operation = get_operation_ast(document)
    return operation.name.value if operation is not None and operation.name is not None else None
