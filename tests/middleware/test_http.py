"""GraphQL over HTTP: GraphiQL for browsers (offline assets), GET for queries, compact UTF-8 JSON."""

from __future__ import annotations

import re

import asyncpg
import httpx

from tests.catalog_fixtures import small_catalog


async def test_browser_gets_graphiql_with_assets_served_locally(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) == 5
    for asset in assets:
        assert asset.startswith("/graphiql-assets/"), f"{asset} would need the internet"
        served = await client.get(asset)
        assert served.status_code == 200 and len(served.content) > 1000, asset
    assert "unpkg.com" not in page.text and "cdn" not in page.text.lower()


async def test_queries_over_get_and_post(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    await small_catalog(conn)
    query = '{ material(sku: "SND0002") { name unit { code } } }'
    got = await client.get("/graphql", params={"query": query}, headers={"Accept": "application/json"})
    posted = await client.post("/graphql", json={"query": query})
    assert got.status_code == posted.status_code == 200
    assert got.json()["data"] == posted.json()["data"] == {"material": {"name": "Песок речной", "unit": {"code": "м³"}}}


async def test_responses_keep_cyrillic_unescaped(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    await small_catalog(conn)
    response = await client.post("/graphql", json={"query": '{ material(sku: "SND0002") { name } }'})
    assert "Песок речной".encode() in response.content
    assert b"\\u" not in response.content


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    live = await client.get("/health/live")
    ready = await client.get("/health/ready")
    assert live.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json()["postgres"]["status"] == "up" and ready.json()["postgres"]["pendingMigrations"] == []
