"""Test fixtures on a real PostgreSQL.

TEST_DATABASE_URL (or DATABASE_URL) names a server to use; without one, an embedded
pgserver instance is started in a temporary folder. Each test session works in a database
of its own, created and migrated here and dropped at the end; tests that need an empty
catalog truncate it first.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from backends.embedded_postgres import start_embedded_postgres
from backends.migrator import apply_migrations
from backends.postgres import PostgresBackend

DATA_TABLES = (
    "material_search, search_words, search_queries, index_cursors, events, price_change_events, material_created_events, audit_log, api_keys, persisted_queries, current_prices, prices, prices_archive, price_list_rejected_rows, price_lists, materials, suppliers, categories"
)


def _server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url
    folder = Path(tempfile.mkdtemp(prefix="materials-test-pg-"))
    return start_embedded_postgres(folder)


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """A freshly created and migrated database for this test session."""
    server = _server_url()
    name = f"materials_test_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(server, name)
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    yield url
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def pg(database_url: str) -> AsyncIterator[PostgresBackend]:
    backend = PostgresBackend(database_url, min_size=1, max_size=5)
    async with backend:
        yield backend


@pytest.fixture
async def empty_catalog(pg: PostgresBackend) -> PostgresBackend:
    """The session database with every catalog table emptied (units are kept)."""
    await pg.execute(f"TRUNCATE {DATA_TABLES} RESTART IDENTITY CASCADE")
    return pg


@pytest.fixture
async def conn(empty_catalog: PostgresBackend) -> AsyncIterator[asyncpg.Connection]:
    async with empty_catalog.pool.acquire() as connection:
        yield connection


SHARED_REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own in the shared Redis (TEST_REDIS_URL), deleted afterwards."""
    import redis.asyncio as aioredis

    name = f"test-{secrets.token_hex(4)}"
    yield name
    client = aioredis.from_url(SHARED_REDIS)
    try:
        keys = [k async for k in client.scan_iter(f"{name}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def make_settings(database_url: str, **overrides: Any) -> Any:
    from server import Settings

    # Search on the hashed-trigram embedder and qdrant-client's in-memory local mode unless a
    # test asks for more (tests/schema/test_search.py runs the real model).
    # Tests of other things call mutations without a key and make many requests in a row: they
    # run with anonymous writes and without rate limits (tests/middleware/test_protection.py and
    # its neighbours check both as they ship: ANONYMOUS=read, RATE_LIMIT=on).
    values: dict[str, Any] = {"database_url": database_url, "seed_demo": False, "debug": True,
                              "embedder": "hash", "qdrant_url": ":memory:",
                              "data_dir": Path(tempfile.gettempdir()) / "materials-tests",
                              "anonymous": "write", "rate_limit": False}
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def app_client(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the whole ASGI app (lifespan included) in-process."""
    from server import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


@pytest.fixture
async def client(database_url: str, empty_catalog: PostgresBackend) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process, its cache on (L1 only: no Redis)."""
    async with app_client(make_settings(database_url)) as http:
        yield http


async def gql(client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """POSTs a GraphQL operation and returns the decoded JSON body."""
    response = await client.post("/graphql", json={"query": query, "variables": variables or {}})
    assert response.status_code == 200, response.text
    return response.json()


async def gql_data(client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """Like gql(), but fails the test on any GraphQL error."""
    body = await gql(client, query, variables)
    assert "errors" not in body, body["errors"]
    return body["data"]
