"""Hostile queries are refused before they run, with the same answer on the lean path and Strawberry's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from backends.postgres import PostgresBackend
from middleware.protection import refusals
from tests.catalog_fixtures import small_catalog
from tests.conftest import app_client, make_settings

DEEP = "{ categories { " + "children { " * 12 + "name" + " }" * 12 + " } }"
COSTLY = """{ materials(first: 100) { edges { node { name priceHistory(first: 100) { edges { node {
  supplier { priceLists(first: 50) { edges { node { version } } } } } } } } } } }"""


@pytest.fixture(params=[True, False], ids=["lean", "strawberry"])
async def http(request: Any, database_url: str, empty_catalog: PostgresBackend) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(make_settings(database_url, anonymous="read", lean_queries=request.param,
                                        debug=False)) as client:
        yield client


async def refused(client: httpx.AsyncClient, body: Any, status: int = 200) -> dict[str, Any]:
    response = await client.post("/graphql", json=body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload.get("data") is None and payload["errors"], payload
    return payload["errors"][0]


async def test_deep_nesting_is_refused(http: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    await small_catalog(conn)
    error = await refused(http, {"query": DEEP})
    assert error["message"] == "the query nests fields 14 deep; at most 12 levels are allowed"
    assert error["extensions"] == {"code": "QUERY_LIMIT", "limit": "depth", "max": 12}
    # Fragments do not hide depth
    spread = ("query { categories { ...A } } fragment A on Category { children { ...B } } "
              "fragment B on Category { children { " + "children { " * 11 + "name" + " }" * 11 + " } }")
    assert (await refused(http, {"query": spread}))["extensions"]["limit"] == "depth"
    ok = await http.post("/graphql", json={"query": "{ categories { children { children { name } } } }"})
    assert "errors" not in ok.json()


async def test_alias_floods_are_refused(http: httpx.AsyncClient) -> None:
    fifty_one = "{ " + " ".join(f"a{i}: __typename" for i in range(51)) + " }"
    error = await refused(http, {"query": fifty_one})
    assert error["message"] == "the query has 51 aliases; at most 50 are allowed"
    flood = "{ " + " ".join(f"a{i}: __typename" for i in range(10_000)) + " }"
    error = await refused(http, {"query": flood})
    assert error["extensions"]["code"] == "QUERY_LIMIT" and error["extensions"]["limit"] == "chars"
    assert "at most 20000 are accepted" in error["message"]


async def test_token_floods_are_refused_at_parse(http: httpx.AsyncClient) -> None:
    dense = "{ " + "__typename " * 1500 + "}"  # short enough for the character limit
    error = await refused(http, {"query": dense})
    assert "Document contains more than 1000 tokens" in error["message"]


async def test_huge_pages_are_refused_before_they_run(http: httpx.AsyncClient) -> None:
    error = await refused(http, {"query": "{ materials(first: 5000) { totalCount } }"})
    assert error["message"] == "first: must be at most 100 (got 5000)"
    by_variable = {"query": "query($n: Int) { suppliers(first: $n) { edges { node { name } } } }",
                   "variables": {"n": 1000}}
    assert (await refused(http, by_variable))["extensions"] == {"code": "VALIDATION", "field": ["first"]}


async def test_costly_queries_are_refused(http: httpx.AsyncClient) -> None:
    error = await refused(http, {"query": COSTLY})
    assert error["extensions"]["code"] == "QUERY_LIMIT" and error["extensions"]["limit"] == "cost"
    assert error["extensions"]["cost"] > 5000
    assert "at most 5000 are allowed per request" in error["message"]


async def test_pages_sent_as_floats_or_nulls_are_costed_as_the_resolvers_will_page(http: httpx.AsyncClient) -> None:
    # graphql-core coerces an integral float to an Int: 5000.0 is 5000 to the resolver.
    by_float = {"query": "query($n: Int) { suppliers(first: $n) { edges { node { name } } } }",
                "variables": {"n": 5000.0}}
    assert (await refused(http, by_float))["message"] == "first: must be at most 100 (got 5000)"
    nested = ("query($n: Int, $m: Int) { materials(first: $n) { edges { node { priceHistory(first: $m) { edges { "
              "node { supplier { priceLists(first: $m) { edges { node { version } } } } } } } } } } }")
    as_ints = await refused(http, {"query": nested, "variables": {"n": 100, "m": 50}})
    as_floats = await refused(http, {"query": nested, "variables": {"n": 100.0, "m": 50.0}})
    assert as_floats["extensions"]["cost"] == as_ints["extensions"]["cost"] > 5000
    # null pages by the fields' defaults (materials 20, priceHistory 50, priceLists 20), not by 1
    as_nulls = await refused(http, {"query": nested, "variables": {"n": None, "m": None}})
    defaults = nested.replace("priceLists(first: $m)", "priceLists(first: 20)")
    as_defaults = await refused(http, {"query": defaults, "variables": {"n": 20, "m": 50}})
    assert as_nulls["extensions"]["cost"] == as_defaults["extensions"]["cost"] > 5000


async def test_batches_are_refused_clearly(http: httpx.AsyncClient) -> None:
    response = await http.post("/graphql", json=[{"query": "{ units { code } }"}] * 50)
    assert response.status_code == 400
    assert "send one operation per request" in response.text


async def test_refusals_are_counted_by_reason(http: httpx.AsyncClient) -> None:
    before = refusals()
    await refused(http, {"query": "{ materials(first: 5000) { totalCount } }"})
    await refused(http, {"query": COSTLY})
    after = refusals()
    assert after.get("validation", 0) == before.get("validation", 0) + 1
    assert after.get("cost", 0) == before.get("cost", 0) + 1


async def test_introspection_and_graphiql_can_be_switched_off(database_url: str, empty_catalog: PostgresBackend) -> None:
    async with app_client(make_settings(database_url, introspection=False, graphiql=False)) as client:
        error = await refused(client, {"query": "{ __schema { types { name } } }"})
        assert "introspection" in error["message"].lower()
        page = await client.get("/graphql", headers={"accept": "text/html"})
        assert "graphiql" not in page.text.lower()
        assert (await client.post("/graphql", json={"query": "{ __typename }"})).json()["data"] == {"__typename": "Query"}
    async with app_client(make_settings(database_url)) as client:
        schema = await client.post("/graphql", json={"query": "{ __schema { queryType { name } } }"})
        assert schema.json()["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_cached_verdicts_are_counted_each_time(http: httpx.AsyncClient) -> None:
    before = refusals().get("depth", 0)
    for _ in range(3):
        await refused(http, {"query": DEEP})
    assert refusals().get("depth", 0) == before + 3


async def test_an_export_of_the_catalog_is_priced_and_limited_per_caller(database_url: str) -> None:
    from graphql import get_operation_ast, parse

    from server import create_app

    app = create_app(make_settings(database_url, anonymous="read"))
    guard = app.state.protection.guard
    document = parse("subscription { exportMaterials(batchSize: 1000) { sequence materials { id name } } }")
    analysis = guard.analyse(document, get_operation_ast(document), None)
    # Review: it cost 4 points for the whole catalog; now like 1000 rows read, and 6 a minute.
    assert analysis.cost >= 1000
    assert analysis.rated == (("Subscription.exportMaterials", "6/minute"),)
