"""The lean path answers byte for byte what Strawberry's view answers, and leaves the rest to it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from middleware.lean_queries import LeanQueries
from resolvers.ids import to_global_id
from tests.catalog_fixtures import small_catalog
from tests.conftest import make_settings

PAGE = """query Page($cat: ID, $n: Int) { materials(first: $n, filter: {categoryId: $cat}) {
  totalCount edges { cursor node { id sku name unit { code } category { name }
  currentPrices { unitPrice currency supplier { name } } cheapest: bestPrice { unitPrice } } }
  pageInfo { hasNextPage endCursor } } }"""
TWO_OPERATIONS = "query A { units { code } } query B { categories { name } }"

# (body, handled by the lean path)
CASES: list[tuple[Any, bool]] = [
    ({"query": PAGE, "variables": {"n": 5}}, True),
    ({"query": PAGE, "variables": {"n": 500}}, True),  # a resolver error: first above the cap
    ({"query": PAGE, "variables": {"n": "five"}}, True),  # a variable of the wrong type
    ({"query": PAGE, "variables": {"cat": "not-an-id", "n": 3}}, True),
    ({"query": TWO_OPERATIONS, "operationName": "B"}, True),
    ({"query": TWO_OPERATIONS, "operationName": "C"}, False),  # unknown operation
    ({"query": TWO_OPERATIONS}, False),  # no operation chosen
    # Documents that do not validate or parse: answered by the lean path too (issue 7: a flood of
    # hostile documents is refused without a second parse), with Strawberry's bytes.
    ({"query": "{ materials(first: 2) { edges { node { nme } } } }"}, True),
    ({"query": "{ materials(first: 2) "}, True),
    ({"query": "{ " + "__typename " * 1500 + "}"}, True),  # over MAX_TOKENS
    ({"query": "{ categories { " + "children { " * 13 + "name" + " }" * 13 + " } }"}, True),  # over MAX_DEPTH
    ({"query": 'mutation { createSupplier(name: "  ") { errors { field code } } }'}, False),  # a mutation
    ([{"query": "{ units { code } }"}], False),  # a batch
    ({"query": "{ units { code } }", "variables": [1]}, False),
    ("{ units { code } }", False),  # not an object
    (42, False),
]


@pytest.fixture
async def clients(database_url: str, empty_catalog: Any, conn: asyncpg.Connection) -> AsyncIterator[tuple[Any, ...]]:
    from server import create_app

    ids = await small_catalog(conn)
    apps = [create_app(make_settings(database_url, lean_queries=lean)) for lean in (True, False)]
    async with apps[0].router.lifespan_context(apps[0]), apps[1].router.lifespan_context(apps[1]):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[0]), base_url="http://t") as lean, \
                httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[1]), base_url="http://t") as plain:
            yield lean, plain, ids


@pytest.mark.parametrize(("body", "lean_handles"), CASES)
async def test_same_answer_with_and_without_the_lean_path(
    clients: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch, body: Any, lean_handles: bool
) -> None:
    lean, plain, _ = clients
    handled: list[bool] = []
    original = LeanQueries.handle

    async def spy(self: LeanQueries, *args: Any) -> bool:
        handled.append(await original(self, *args))
        return handled[-1]

    monkeypatch.setattr(LeanQueries, "handle", spy)
    raw = json.dumps(body, ensure_ascii=False).encode()
    headers = {"content-type": "application/json"}
    fast = await lean.post("/graphql", content=raw, headers=headers)
    slow = await plain.post("/graphql", content=raw, headers=headers)
    assert handled == [lean_handles]
    assert (fast.status_code, fast.headers["content-type"]) == (slow.status_code, slow.headers["content-type"])
    assert fast.content == slow.content


async def test_a_real_page_through_the_lean_path(clients: tuple[Any, ...]) -> None:
    lean, plain, ids = clients
    body = {"query": PAGE, "variables": {"cat": to_global_id("Category", ids.categories["binders"]), "n": 10}}
    fast = (await lean.post("/graphql", json=body)).json()
    assert [e["node"]["sku"] for e in fast["data"]["materials"]["edges"]] == ["LIM0001", "CEM0001", "CEM0002"]
    assert fast["extensions"]["queryStats"]["sqlRoundTrips"] >= 1  # DEBUG is on in the test settings
    assert fast == (await plain.post("/graphql", json=body)).json()


async def test_json_with_a_charset_and_a_non_json_body(clients: tuple[Any, ...]) -> None:
    lean, plain, _ = clients
    headers = {"content-type": "application/json; charset=utf-8"}
    ok = await lean.post("/graphql", content=b'{"query": "{ units { code } }"}', headers=headers)
    assert ok.status_code == 200 and ok.json()["data"]["units"]
    broken = await lean.post("/graphql", content=b"{not json", headers=headers)
    same = await plain.post("/graphql", content=b"{not json", headers=headers)
    assert broken.status_code == same.status_code == 400 and broken.content == same.content
    not_an_object = await lean.post("/graphql", json="{ units { code } }")
    assert not_an_object.status_code == 400 and "must be a JSON object" in not_an_object.text


# (query parameters, handled by the lean path)
GET_CASES: list[tuple[dict[str, str], bool]] = [
    ({"query": PAGE, "variables": json.dumps({"n": 5})}, True),
    ({"query": PAGE, "variables": json.dumps({"n": 500})}, True),  # a resolver error
    ({"query": "{ units { code } }"}, True),
    ({"query": TWO_OPERATIONS, "operationName": "B"}, True),
    ({"query": TWO_OPERATIONS, "operationName": "C"}, False),
    ({"query": TWO_OPERATIONS, "operationName": ""}, False),
    ({"query": PAGE, "variables": "{not json"}, False),
    ({"query": PAGE, "variables": "[1]"}, False),
    ({"query": PAGE, "variables": ""}, False),
    ({"query": "{ units { code } }", "extensions": "{}"}, False),
    ({"query": "{ materials(first: 2) { edges { node { nme } } } }"}, True),  # does not validate: answered too
    ({"query": 'mutation { createSupplier(name: "x") { errors { code } } }'}, False),  # not over GET
]


@pytest.mark.parametrize(("params", "lean_handles"), GET_CASES)
async def test_same_answer_to_a_get_with_and_without_the_lean_path(
    clients: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch, params: dict[str, str], lean_handles: bool
) -> None:
    lean, plain, _ = clients
    handled: list[bool] = []
    original = LeanQueries.handle_get

    async def spy(self: LeanQueries, *args: Any) -> bool:
        handled.append(await original(self, *args))
        return handled[-1]

    monkeypatch.setattr(LeanQueries, "handle_get", spy)
    fast = await lean.get("/graphql", params=params)
    slow = await plain.get("/graphql", params=params)
    assert handled == [lean_handles]
    assert (fast.status_code, fast.headers["content-type"]) == (slow.status_code, slow.headers["content-type"])
    assert fast.content == slow.content


async def test_a_get_without_a_query_still_gets_graphiql(clients: tuple[Any, ...]) -> None:
    lean, plain, _ = clients
    page = await lean.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and page.content == (await plain.get("/graphql", headers={"accept": "text/html"})).content
