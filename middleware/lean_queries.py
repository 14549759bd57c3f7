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
from middleware.auth import PRINCIPAL
from middleware.observability import note_operation, note_outcome, outcome_of
from middleware.protection import Admission, Guard, Refusal
from middleware.response_cache import ANONYMOUS, ResponseCache

DOCUMENT_CACHE_SIZE = 1024


class LeanQueries:
    """Answers POSTed JSON query operations; `handle` returns False for anything else."""

    def __init__(self, schema: Any, context_factory: Callable[[Any, Any], Any], *, query_stats: bool,
                 responses: ResponseCache | None = None, guard: Guard | None = None,
                 middleware_for: Callable[[], list[Any] | None] | None = None) -> None:
        self._schema = schema
        self._guard = guard
        self._rules = tuple(specified_rules) + (guard.rules if guard is not None else ())
        self._max_tokens = guard.limits.max_tokens if guard is not None else None
        self._graphql_schema = schema._schema
        self._executor = schema.execution_context_class
        self._context_factory = context_factory
        self._query_stats = query_stats
        self._responses = responses
        self._middleware_for = middleware_for  # graphql-core middleware per execution (sampled resolver timings)
        # query text -> (parsed document, its normalised text), or None when it does not parse or validate
        self._documents: OrderedDict[str, Any] = OrderedDict()

    def _document(self, query: str) -> Any:
        """(parsed document, its normalised text), or None when it does not parse or validate."""
        verdict = self._verdict(query)
        return verdict if isinstance(verdict, tuple) else None

    def _verdict(self, query: str) -> tuple[Any, str] | list[GraphQLError]:
        """The document, or the errors that refuse it (kept too: a flood of one bad document
        is answered from here, not parsed again)."""
        verdict = self._documents.get(query)
        if verdict is not None:
            self._documents.move_to_end(query)
            return verdict
        try:
            parsed = parse(query, max_tokens=self._max_tokens)
            errors = validate_document(self._graphql_schema, parsed, self._rules)
            verdict = list(errors) if errors else (parsed, print_ast(parsed))
        except GraphQLError as error:
            verdict = [error]
        self._documents[query] = verdict
        if len(self._documents) > DOCUMENT_CACHE_SIZE:
            self._documents.popitem(last=False)
        return verdict

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
        if self._guard is not None:
            try:
                self._guard.limit_query(query)
            except Refusal as refusal:
                await _refuse(refusal, scope, receive, send, self._query_stats)
                return True
        verdict = self._verdict(query)
        if not isinstance(verdict, tuple):
            if self._guard is None:
                return False
            # Answered here, byte for byte as Strawberry would (tests compare): a hostile document
            # is not parsed and validated a second time by Strawberry's view.
            await self._refuse_document(verdict, scope, receive, send)
            return True
        document, normalised = verdict
        operation = get_operation_ast(document, name)
        if operation is None or operation.operation is not OperationType.QUERY:
            return False
        admission: Admission | None = None
        principal = scope.get(PRINCIPAL)
        if self._guard is not None:
            # Before anything runs or is served from the response cache.
            try:
                admission = await self._guard.admit(document, operation, variables, principal, query)
            except Refusal as refusal:
                await _refuse(refusal, scope, receive, send, self._query_stats)
                return True
        cost = admission.cost_extension() if admission is not None else None

        label = name or (operation.name.value if operation.name else None)
        note_operation(label, "ok")  # the outcome is corrected by _execute (errors) or below (cached)
        context = self._context_factory(Request(scope, receive), None)
        view = getattr(context, "cache", None)
        if self._responses is None or view is None or not self._responses.answers(operation):
            body, _ = await self._execute(document, context, variables, name, cost=cost)
            await Response(body, media_type="application/json")(scope, receive, send)
            return True
        # Stored operations read public catalog data only, the same for every caller allowed
        # to read (the guard just checked that): one shared entry. Without a guard (tests of
        # the cache alone) callers keep entries of their own.
        owner = ANONYMOUS if self._guard is not None else self._responses.scope_of(scope)
        key = (normalised, name, variables or {}, owner)
        fresh: list[bytes] = []
        stored, hit = await self._responses.serve(
            view, key, lambda: self._execute(document, context, variables, name, stored=fresh, cost=cost))
        # The stored bytes never hold this request's queryStats or cost; a miss answers with them.
        body = with_extensions(stored, {"cost": cost} if cost else None) if hit or not fresh else fresh[0]
        if hit:
            note_operation(label, "cached")
        headers = {"x-cache": "hit" if hit else "miss"}
        await Response(body, media_type="application/json", headers=headers)(scope, receive, send)
        return True

    async def _refuse_document(self, errors: list[GraphQLError], scope: Any, receive: Any, send: Any) -> None:
        for error in errors:
            if isinstance(error, Refusal):
                error.counted()
        note_outcome(outcome_of(errors))
        self._schema.process_errors(errors)  # logged like Strawberry logs them
        payload: dict[str, Any] = {"data": None, "errors": [error.formatted for error in errors]}
        if self._query_stats:
            payload["extensions"] = {"queryStats": {"sqlRoundTrips": 0}}
        await Response(orjson.dumps(payload), media_type="application/json")(scope, receive, send)

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
                       stored: list[bytes] | None = None, cost: dict[str, Any] | None = None) -> tuple[bytes, bool]:
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
        extensions: dict[str, Any] = {}
        if stats is not None:
            extensions["queryStats"] = {"sqlRoundTrips": stats.round_trips}
        if cost is not None:
            extensions["cost"] = cost
        if extensions:
            payload["extensions"] = extensions
            body = orjson.dumps(payload)
        if stored is None:
            return body, not result.errors
        stored.append(body)
        return plain, not result.errors


def with_extensions(body: bytes, extensions: dict[str, Any] | None) -> bytes:
    """A stored body (`{"data":...}` as orjson wrote it, no extensions) with `extensions` added
    last, byte for byte what orjson.dumps would give for the whole payload."""
    if not extensions:
        return body
    return body[:-1] + b',"extensions":' + orjson.dumps(extensions) + b"}"


async def _refuse(refusal: Refusal, scope: Any, receive: Any, send: Any, query_stats: bool) -> None:
    # The same bytes as Strawberry's answer to the refusal raised in ProtectionExtension
    # (nothing ran: no SQL round trips).
    refusal.counted()
    note_outcome("refused")
    payload: dict[str, Any] = {"data": None, "errors": [refusal.formatted]}
    if query_stats:
        payload["extensions"] = {"queryStats": {"sqlRoundTrips": 0}}
    body = orjson.dumps(payload)
    await Response(body, status_code=refusal.status, media_type="application/json",
                   headers=refusal.headers)(scope, receive, send)


def _operation_name(document: Any) -> str | None:
    operation = get_operation_ast(document)
    return operation.name.value if operation is not None and operation.name is not None else None
