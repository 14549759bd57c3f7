"""Per-request observability: request id, one JSON log line, request metrics (pure ASGI).

Every HTTP request gets a `RequestObservation` in its scope (`observation_of(scope)`) and in a
context variable (`current_observation()`), filled in by whoever learns something about it:
the GraphQL paths name the operation and its outcome (`note_operation`; the lean path in
middleware.lean_queries, Strawberry's through `OperationOutcomeExtension`); the principal
is the API key's prefix that middleware.auth put in the scope. When the response is sent the
middleware records the request's metrics (backends.metrics) and logs one line:

    {"message": "request", "requestId": ..., "operation": ..., "outcome": ..., "principal": ...,
     "durationMs": ..., "status": ..., "sqlRoundTrips": ..., "traceId": ...}

The request id is the client's `X-Request-Id` when it is a sane token, else a new one; it is
sent back in `X-Request-Id` and is in every log record written while the request runs
(middleware.json_logs).
"""

from __future__ import annotations

import contextvars
import logging
import random
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from strawberry.extensions import SchemaExtension

from backends import metrics
from backends.postgres import current_query_stats, track_queries
from middleware.auth import PRINCIPAL

log = logging.getLogger("materials.requests")

SCOPE_KEY = "materials.observation"
REQUEST_ID_HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_SANE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_OPERATION_NAMES = 200  # distinct operation labels kept; later names count as "other"
QUIET_PATHS = ("/health/", "/metrics")  # probes and scrapes: no metrics, logged at DEBUG


@dataclass
class RequestObservation:
    """What is known about one HTTP request; attributes are set while it runs."""

    request_id: str
    method: str
    path: str
    operation: str | None = None  # the GraphQL operation's name ("anonymous" when it has none)
    outcome: str | None = None  # ok, cached, error, unavailable, refused (None: from the HTTP status)
    principal: str = "anonymous"  # the API key's prefix (middleware.auth's principal), when one was sent
    trace_id: str | None = None
    sampled: bool = False  # resolver timings (and spans, when tracing) for this request
    stream: bool = False  # the response is an event stream (an SSE subscription): not a request's latency


_current: contextvars.ContextVar[RequestObservation | None] = contextvars.ContextVar(
    "request_observation", default=None)


def current_observation() -> RequestObservation | None:
    return _current.get()


def observation_of(scope: Any) -> RequestObservation | None:
    return scope.get(SCOPE_KEY)


def note_operation(name: str | None, outcome: str) -> None:
    """Names the current request's GraphQL operation and its outcome (no-op outside a request)."""
    observation = _current.get()
    if observation is not None:
        observation.operation = name or "anonymous"
        observation.outcome = outcome


def note_outcome(outcome: str) -> None:
    """Sets the current request's outcome only (a request refused before its operation was named)."""
    observation = _current.get()
    if observation is not None:
        observation.outcome = outcome


# Codes of requests refused before running (middleware.protection, middleware.auth).
REFUSAL_CODES = frozenset({"RATE_LIMITED", "QUERY_LIMIT", "FORBIDDEN", "PERSISTED_QUERY_NOT_ALLOWED"})


def outcome_of(errors: Any) -> str:
    """ok, or refused / unavailable (a backend was down) / error from a result's GraphQL errors."""
    if not errors:
        return "ok"
    codes = {(getattr(error, "extensions", None) or {}).get("code") for error in errors}
    if "UNAVAILABLE" in codes:
        return "unavailable"
    if codes & REFUSAL_CODES:
        return "refused"
    return "error"


class _OperationLabels:
    """Client-chosen operation names as metric labels, bounded so a client cannot blow up the series."""

    def __init__(self, limit: int = MAX_OPERATION_NAMES) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, name: str | None) -> str:
        if name is None:
            return "none"
        if name in self.seen:
            return name
        if not _SANE_NAME.fullmatch(name) or len(self.seen) >= self.limit:
            return "other"
        self.seen.add(name)
        return name


class ObservabilityMiddleware:
    """Request id in and out, metrics and a JSON log line per HTTP request."""

    def __init__(self, app: Any, *, sample_ratio: float = 0.0, trace_header: bool = True) -> None:
        self.app = app
        self.labels = _OperationLabels()
        self.sample_ratio = sample_ratio
        self.trace_header = trace_header

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        observation = RequestObservation(_request_id(scope), scope["method"], scope["path"],
                                         sampled=self.sample_ratio > 0 and random.random() < self.sample_ratio)
        scope[SCOPE_KEY] = observation
        token = _current.set(observation)
        track_queries()  # round trips of this request, whichever path serves it
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                observation.stream = any(k == b"content-type" and v.startswith(b"text/event-stream")
                                         for k, v in message.get("headers", ()))
                headers = [*message.get("headers", ()), (b"x-request-id", observation.request_id.encode())]
                if observation.trace_id and self.trace_header:
                    headers.append((b"x-trace-id", observation.trace_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            principal = scope.get(PRINCIPAL)  # set by the API-key check (middleware.auth)
            if principal is not None:
                observation.principal = principal.actor
            self._finish(observation, status, seconds)
            _current.reset(token)

    def _finish(self, observation: RequestObservation, status: int, seconds: float) -> None:
        stats = current_query_stats()
        round_trips = stats.round_trips if stats is not None else None
        outcome = observation.outcome or ("ok" if status < 400 else "rejected" if status < 500 else "error")
        quiet = observation.path.startswith(QUIET_PATHS)
        if observation.stream:
            # An SSE subscription lives for minutes or hours: counted as a stream, kept out of
            # the latency histogram (it would dominate every request-latency alert).
            outcome = "stream"
            metrics.REQUESTS.labels(self.labels(observation.operation), outcome).inc()
        elif not quiet:
            metrics.record_request(self.labels(observation.operation), outcome, seconds,
                                   round_trips if observation.operation is not None else None)
        log.log(logging.DEBUG if quiet else logging.INFO, "request", extra={"fields": {
            "requestId": observation.request_id, "method": observation.method, "path": observation.path,
            "status": status, "operation": observation.operation, "outcome": outcome,
            "principal": observation.principal, "durationMs": round(seconds * 1000, 3),
            "sqlRoundTrips": round_trips, "traceId": observation.trace_id}})


def _request_id(scope: Any) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and _SANE_ID.fullmatch(value):
            return value.decode()
    return uuid.uuid4().hex


class OperationOutcomeExtension(SchemaExtension):
    """Names the operation and its outcome for requests Strawberry's HTTP view serves
    (mutations, uploads, batches, documents that fail to parse or validate)."""

    def on_operation(self) -> Iterator[None]:
        yield
        context = self.execution_context
        try:
            name = context.operation_name
        except Exception:  # a document that did not parse has no operation to name
            name = None
        result = context.result
        errors = getattr(result, "errors", None) if result is not None else context.pre_execution_errors
        note_operation(name, outcome_of(errors))
