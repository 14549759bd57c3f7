"""/metrics, request ids and the JSON request log, on both GraphQL paths (lean and Strawberry's)."""

from __future__ import annotations

import logging

import asyncpg
import httpx
import orjson
import pytest

from backends.metrics import sample_value, sum_values
from middleware.json_logs import JsonLogFormatter
from resolvers.ids import to_global_id
from tests.catalog_fixtures import JAN, insert_material, insert_price_list, insert_supplier

READ = "query ReadOne($id: ID!) { material(id: $id) { name currentPrices { unitPrice } } }"
RENAME = "mutation Rename($id: ID!, $n: String!) { updateMaterial(id: $id, patch: {name: $n}) { errors { code } } }"
BAD = "query Broken { material(id: \"not-an-id\") { name } }"


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def requests_of(text: str, operation: str, outcome: str) -> float:
    return sample_value(text, "materials_requests_total", {"operation": operation, "outcome": outcome}) or 0.0


async def test_metrics_count_requests_by_operation_and_outcome_on_every_path(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    mid = await insert_material(conn, "Цемент М500", "мешок")
    supplier = await insert_supplier(conn, "ООО «Метрика»")
    await insert_price_list(conn, supplier, 1, JAN, [(mid, "380.00", "RUB")])
    variables = {"id": to_global_id("Material", mid)}
    before = await scrape(client)

    for _ in range(2):  # a miss, then a response-cache hit, POSTed (the lean path)
        assert (await client.post("/graphql", json={"query": READ, "variables": variables})).status_code == 200
    get = await client.get("/graphql", params={"query": READ, "variables": orjson.dumps(variables).decode()})
    assert get.headers["x-cache"] == "hit"  # GET shares the POST's entry
    renamed = await client.post("/graphql", json={"query": RENAME, "variables": {**variables, "n": "Цемент"}})
    assert renamed.json()["data"]["updateMaterial"]["errors"] == []  # a mutation: Strawberry's path
    assert "errors" in (await client.post("/graphql", json={"query": BAD})).json()

    after = await scrape(client)
    assert requests_of(after, "ReadOne", "ok") == requests_of(before, "ReadOne", "ok") + 1
    assert requests_of(after, "ReadOne", "cached") == requests_of(before, "ReadOne", "cached") + 2
    assert requests_of(after, "Rename", "ok") == requests_of(before, "Rename", "ok") + 1
    assert requests_of(after, "Broken", "error") == requests_of(before, "Broken", "error") + 1
    seconds = {"operation": "ReadOne", "outcome": "cached"}
    assert (sample_value(after, "materials_request_seconds_count", seconds) or 0) == \
        (sample_value(before, "materials_request_seconds_count", seconds) or 0) + 2
    # SQL round trips are recorded for each of the three.
    trips = {"operation": "ReadOne"}
    assert (sample_value(after, "materials_sql_round_trips_count", trips) or 0) == \
        (sample_value(before, "materials_sql_round_trips_count", trips) or 0) + 3
    assert (sample_value(after, "materials_sql_round_trips_sum", trips) or 0) > \
        (sample_value(before, "materials_sql_round_trips_sum", trips) or 0)
    # Cache levels, the pool, and the placeholders other features feed are all exposed.
    assert sum_values(after, "materials_cache_lookups_total", {"level": "response", "result": "hit"}) >= 2
    assert sample_value(after, "materials_pg_pool_connections", {"pool": "primary", "state": "max"}) == 10
    assert sample_value(after, "materials_outbox_lag_events") is not None
    for name in ("materials_rate_limit_refusals", "materials_open_subscriptions", "materials_import_rows",
                 "materials_circuit_state"):
        assert f"# HELP {name}" in after


async def test_the_request_id_is_echoed_or_made_and_logged_with_the_operation(
    client: httpx.AsyncClient, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    mid = await insert_material(conn, "Песок речной", "т")
    variables = {"id": to_global_id("Material", mid)}
    with caplog.at_level(logging.INFO, logger="materials.requests"):
        given = await client.post("/graphql", json={"query": READ, "variables": variables},
                                  headers={"X-Request-Id": "req-42.a"})
        made = await client.post("/graphql", json={"query": READ, "variables": variables},
                                 headers={"X-Request-Id": "no spaces or\ttabs allowed"})
    assert given.headers["x-request-id"] == "req-42.a"
    assert made.headers["x-request-id"] not in ("", "no spaces or\ttabs allowed")
    lines = [r for r in caplog.records if r.name == "materials.requests"]
    assert [r.fields["requestId"] for r in lines] == ["req-42.a", made.headers["x-request-id"]]
    first = lines[0].fields
    assert (first["operation"], first["outcome"], first["principal"], first["status"]) == \
        ("ReadOne", "ok", "anonymous", 200)
    assert first["durationMs"] > 0 and first["sqlRoundTrips"] >= 1
    # A hit reads no rows; without Redis it still asks PostgreSQL for the current generation.
    assert lines[1].fields["outcome"] == "cached" and lines[1].fields["sqlRoundTrips"] < first["sqlRoundTrips"]
    # The formatter writes the record as one JSON object with those fields.
    entry = orjson.loads(JsonLogFormatter().format(lines[0]))
    assert entry["message"] == "request" and entry["requestId"] == "req-42.a" and entry["operation"] == "ReadOne"


class JsonLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonLogFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


async def test_log_records_written_during_a_request_are_json_lines_with_its_id(client: httpx.AsyncClient) -> None:
    handler = JsonLines()
    logger = logging.getLogger("materials")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        await client.post("/graphql", json={"query": "{ __typename }"}, headers={"X-Request-Id": "abc-1"})
        logging.getLogger("materials.test").info("outside any request")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    # (Background jobs may log on "materials" meanwhile: pick the two lines by their message.)
    [request_line] = [line for line in handler.lines if line["message"] == "request"]
    [outside] = [line for line in handler.lines if line["message"] == "outside any request"]
    assert request_line["requestId"] == "abc-1" and request_line["operation"] == "anonymous"
    assert request_line["level"] == "INFO" and request_line["ts"].endswith("Z")
    assert outside["message"] == "outside any request" and "requestId" not in outside


@pytest.mark.parametrize("ratio", [1.0, 0.0])
async def test_top_level_resolvers_are_timed_on_sampled_requests_only(
    database_url: str, empty_catalog: object, ratio: float
) -> None:
    from tests.conftest import app_client, make_settings

    def timed(text: str, field: str) -> float:
        return sample_value(text, "materials_resolver_seconds_count", {"field": field}) or 0.0

    async with app_client(make_settings(database_url, trace_sample_ratio=ratio, response_cache=False)) as http:
        before = (await http.get("/metrics")).text
        for _ in range(3):  # the lean path
            await http.post("/graphql", json={"query": "query { units { code } categories { id } }"})
        created = await http.post("/graphql", json={"query": 'mutation { createSupplier(name: "Тайминг") '
                                                             "{ errors { code } } }"})  # Strawberry's path
        assert created.json()["data"]["createSupplier"]["errors"] == []
        after = (await http.get("/metrics")).text
    expected = 3 if ratio == 1.0 else 0
    assert timed(after, "Query.units") - timed(before, "Query.units") == expected
    assert timed(after, "Query.categories") - timed(before, "Query.categories") == expected
    assert timed(after, "Mutation.createSupplier") - timed(before, "Mutation.createSupplier") == expected // 3
    assert timed(after, "Unit.code") == 0  # nested fields are never wrapped


async def test_the_api_keys_prefix_is_the_principal_and_refusals_are_counted_by_reason(
    database_url: str, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.conftest import app_client, make_settings
    from tests.keys import bearer, make_key

    key = await make_key(conn, ("read",))
    prefix = key.split("_")[1]
    deep = "query Deep { categories { children { children { children { id } } } } }"
    async with app_client(make_settings(database_url, max_depth=3)) as http:
        before = (await http.get("/metrics")).text
        with caplog.at_level(logging.INFO, logger="materials.requests"):
            ok = await http.post("/graphql", json={"query": "query Mine { units { code } }"}, headers=bearer(key))
            refused = await http.post("/graphql", json={"query": deep})
        after = (await http.get("/metrics")).text
    assert "errors" not in ok.json()
    assert refused.json()["errors"][0]["extensions"]["code"] == "QUERY_LIMIT"
    mine, deep_line = (r.fields for r in caplog.records if r.name == "materials.requests")
    assert (mine["operation"], mine["principal"], mine["outcome"]) == ("Mine", prefix, "ok")
    # Refused while validating, before any operation was chosen: no operation name to report.
    assert (deep_line["operation"], deep_line["principal"], deep_line["outcome"]) == (None, "anonymous", "refused")
    assert requests_of(after, "none", "refused") == requests_of(before, "none", "refused") + 1
    assert sum_values(after, "materials_rate_limit_refusals_total") == \
        sum_values(before, "materials_rate_limit_refusals_total") + 1


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_both_log_formats_format_records(fmt: str) -> None:
    """The server's two log formats (LOG_FORMAT), as dictConfig builds them in each worker."""
    import logging.config

    from middleware.json_logs import logging_config

    config = logging.config.DictConfigurator(logging_config(fmt))
    formatter = config.configure_formatter(logging_config(fmt)["formatters"]["default"])
    record = logging.LogRecord("materials.test", logging.WARNING, __file__, 1, "pool %s is %s", ("a", "full"), None)
    line = formatter.format(record)
    if fmt == "json":
        assert orjson.loads(line) | {"ts": None} == {"ts": None, "level": "WARNING", "logger": "materials.test",
                                                      "message": "pool a is full"}
    else:
        assert line.endswith(" WARNING materials.test: pool a is full")
