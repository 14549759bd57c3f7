"""OpenTelemetry tracing: a span per request (named for its GraphQL operation), spans and
timings for top-level resolvers, asyncpg and Redis spans; exported over OTLP/HTTP.

Sampling keeps the cost small: `TraceIdRatioBased(ratio)` decides per trace (a caller's
sampled `traceparent` is honoured); an unsampled request runs with instrumentation
suppressed (its statements and Redis commands cost nothing extra), and only a sampled one gets resolver spans and
`materials_resolver_seconds` observations (graphql-core middleware on its top-level
fields; nested fields are not wrapped at all). Without tracing, requests are still sampled
at the same ratio for the resolver timings (middleware.observability).

The trace id of every request (sampled or not) is in its log line and in `X-Trace-Id`.
"""

from __future__ import annotations

import time
from inspect import isawaitable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from strawberry.extensions import SchemaExtension

from backends import metrics
from middleware.observability import current_observation, observation_of


class Tracing:
    """The tracer provider of this process; `start()` instruments asyncpg and Redis, `stop()` flushes."""

    def __init__(self, *, service_name: str, sample_ratio: float, otlp_endpoint: str | None) -> None:
        if not 0.0 <= sample_ratio <= 1.0:
            raise ValueError(f"TRACE_SAMPLE_RATIO must be between 0 and 1 (got {sample_ratio})")
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                                       sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces")
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("materials-graphql")
        self._instrumented = False

    def start(self) -> None:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        AsyncPGInstrumentor().instrument(tracer_provider=self.provider)
        RedisInstrumentor().instrument(tracer_provider=self.provider)
        self._instrumented = True

    def stop(self) -> None:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        if self._instrumented:
            AsyncPGInstrumentor().uninstrument()
            RedisInstrumentor().uninstrument()
            self._instrumented = False
        self.provider.shutdown()  # exports what is still queued


class TracingMiddleware:
    """A SERVER span around each HTTP request, continuing the caller's `traceparent` (pure ASGI)."""

    def __init__(self, app: Any, *, tracing: Tracing) -> None:
        self.app = app
        self.tracer = tracing.tracer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = extract(carrier)
        with self.tracer.start_as_current_span(f"{scope['method']} {scope['path']}", context=parent,
                                               kind=trace.SpanKind.SERVER) as span:
            observation = observation_of(scope)
            ids = span.get_span_context()
            if observation is not None:
                observation.trace_id = format(ids.trace_id, "032x")
                observation.sampled = span.is_recording()
            status = 500

            async def send_status(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                if span.is_recording():
                    await self.app(scope, receive, send_status)
                else:
                    # Not sampled: asyncpg and Redis calls skip their instrumentation entirely
                    # (it would build attributes and non-recording spans for every statement).
                    with suppress_instrumentation():
                        await self.app(scope, receive, send_status)
            finally:
                if span.is_recording():
                    span.set_attribute("http.request.method", scope["method"])
                    span.set_attribute("url.path", scope["path"])
                    span.set_attribute("http.response.status_code", status)
                    if observation is not None and observation.operation is not None:
                        span.update_name(f"graphql {observation.operation}")
                        span.set_attribute("graphql.operation.name", observation.operation)
                        span.set_attribute("graphql.outcome", observation.outcome or "")
                    if status >= 500:
                        span.set_status(trace.StatusCode.ERROR)


class TopLevelResolverTimer:
    """graphql-core middleware: times top-level fields (a span each when tracing); nested fields
    pass straight through. Only given to the executions of sampled requests."""

    def __init__(self, tracer: Any | None) -> None:
        self.tracer = tracer

    def resolve(self, next_: Any, root: Any, info: Any, **args: Any) -> Any:
        if info.path.prev is not None:
            return next_(root, info, **args)
        name = f"{info.parent_type.name}.{info.field_name}"
        span = self.tracer.start_span(name) if self.tracer is not None else None
        token = otel_context.attach(trace.set_span_in_context(span)) if span is not None else None
        started = time.perf_counter()
        try:
            result = next_(root, info, **args)
        except BaseException:
            _finish(name, started, span, failed=True)
            raise
        finally:
            if token is not None:
                otel_context.detach(token)
        if isawaitable(result):
            return _awaited(result, name, started, span)
        _finish(name, started, span)
        return result


async def _awaited(result: Any, name: str, started: float, span: Any) -> Any:
    # The coroutine runs here, not when the resolver was called: its queries are the span's children.
    token = otel_context.attach(trace.set_span_in_context(span)) if span is not None else None
    try:
        value = await result
    except BaseException:
        _finish(name, started, span, failed=True)
        raise
    finally:
        if token is not None:
            otel_context.detach(token)
    _finish(name, started, span)
    return value


def _finish(name: str, started: float, span: Any, failed: bool = False) -> None:
    metrics.RESOLVER_SECONDS.labels(name).observe(time.perf_counter() - started)
    if span is not None:
        if failed:
            span.set_status(trace.StatusCode.ERROR)
        span.end()


def resolver_middleware(timer: TopLevelResolverTimer) -> list[Any] | None:
    """The middleware for this request's execution: the timer when the request is sampled."""
    observation = current_observation()
    return [timer] if observation is not None and observation.sampled else None


class SampledResolversExtension(SchemaExtension):
    """The same top-level timings and spans on Strawberry's path (mutations, uploads, batches)."""

    timer: TopLevelResolverTimer = TopLevelResolverTimer(None)

    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        observation = current_observation()
        if observation is None or not observation.sampled:
            return _next(root, info, *args, **kwargs)
        return self.timer.resolve(_next, root, info, **kwargs)


def with_tracer(tracer: Any | None) -> type[SampledResolversExtension]:
    """The extension class bound to a tracer (None: timings only)."""
    return type("SampledResolvers", (SampledResolversExtension,), {"timer": TopLevelResolverTimer(tracer)})
