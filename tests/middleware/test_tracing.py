"""Traces exported over OTLP/HTTP to a collector of the test's own (an http.server decoding the protobuf)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from resolvers.ids import to_global_id
from tests.catalog_fixtures import insert_material
from tests.conftest import SHARED_REDIS, app_client, make_settings

READ = "query ReadTraced($id: ID!) { material(id: $id) { name currentPrices { unitPrice } } }"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


class Collector(ThreadingHTTPServer):
    """Accepts POST /v1/traces (application/x-protobuf) and keeps every span it was sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.paths.append(self.path)
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}.get("service.name")
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.server.spans.append({
                        "name": span.name, "trace": span.trace_id.hex(), "id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(), "service": service,
                        "attributes": {a.key: a.value.string_value or a.value.int_value for a in span.attributes}})
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_spans_of_requests_resolvers_sql_and_redis_reach_the_collector(
    database_url: str, conn: asyncpg.Connection, collector: Collector, redis_prefix: str,
    caplog: pytest.LogCaptureFixture
) -> None:
    mid = await insert_material(conn, "Цемент трассированный", "мешок")
    variables = {"id": to_global_id("Material", mid)}
    settings = make_settings(database_url, otel_exporter_otlp_endpoint=collector.endpoint, trace_sample_ratio=1.0,
                             redis_url=SHARED_REDIS, cache_prefix=redis_prefix, otel_service_name="materials-test")
    with caplog.at_level(logging.INFO, logger="materials.requests"):
        async with app_client(settings) as http:
            continued = await http.post("/graphql", json={"query": READ, "variables": variables},
                                        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
            fresh = await http.post("/graphql", json={"query": "query Other { __typename }"})
    # Leaving the app flushed the exporter: everything is at the collector now.
    assert continued.headers["x-trace-id"] == TRACE_ID
    assert collector.paths and set(collector.paths) == {"/v1/traces"}
    spans = collector.spans
    assert {s["service"] for s in spans} == {"materials-test"}
    server = next(s for s in spans if s["name"] == "graphql ReadTraced")
    assert (server["trace"], server["parent"]) == (TRACE_ID, PARENT_ID)  # the caller's trace, continued
    assert server["attributes"]["graphql.operation.name"] == "ReadTraced"
    resolver = next(s for s in spans if s["name"] == "Query.material")
    assert resolver["parent"] == server["id"]
    traced = [s for s in spans if s["trace"] == TRACE_ID]
    assert any(s["attributes"].get("db.system") == "postgresql" or s["attributes"].get("db.system.name") ==
               "postgresql" for s in traced), [s["name"] for s in traced]
    assert any("redis" in str(s["attributes"].get("db.system", s["attributes"].get("db.system.name", "")))
               for s in traced), [s["name"] for s in traced]
    other = next(s for s in spans if s["name"] == "graphql Other")
    assert fresh.headers["x-trace-id"] == other["trace"] != TRACE_ID
    logged = {r.fields["operation"]: r.fields["traceId"] for r in caplog.records if r.name == "materials.requests"}
    assert logged == {"ReadTraced": TRACE_ID, "Other": other["trace"]}


async def test_unsampled_requests_export_nothing_but_a_sampled_caller_is_honoured(
    database_url: str, collector: Collector
) -> None:
    settings = make_settings(database_url, otel_exporter_otlp_endpoint=collector.endpoint, trace_sample_ratio=0.0)
    async with app_client(settings) as http:
        for _ in range(5):
            response = await http.post("/graphql", json={"query": "query Quiet { __typename }"})
            assert len(response.headers["x-trace-id"]) == 32  # the id is there for the logs anyway
        await http.post("/graphql", json={"query": "query Asked { __typename }"},
                        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    names = {s["name"] for s in collector.spans}
    assert "graphql Asked" in names and "graphql Quiet" not in names
    # Nothing else was recorded: the unsampled requests' statements were not instrumented at all.
    assert {s["trace"] for s in collector.spans} == {TRACE_ID}
