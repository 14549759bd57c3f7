"""Automatic persisted queries (GET and POST), shared by instances; the allow-list; CDN headers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from backends.postgres import PostgresBackend
from tests.catalog_fixtures import small_catalog
from tests.conftest import SHARED_REDIS, app_client, make_settings
from tests.keys import bearer, make_key
from tests.test_server import ROOT

QUERY = "query Units { units { code name } }"
HASH = hashlib.sha256(QUERY.encode()).hexdigest()


def persisted(digest: str = HASH) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


@pytest.fixture
async def http(database_url: str, empty_catalog: PostgresBackend) -> AsyncIterator[httpx.AsyncClient]:
    # As shipped: rate limits on, so bodies carry extensions.cost (the ETag is of the data alone).
    async with app_client(make_settings(database_url, anonymous="read", rate_limit=True)) as client:
        yield client


async def test_the_apq_flow_over_post(http: httpx.AsyncClient) -> None:
    missing = await http.post("/graphql", json={"extensions": persisted()})
    assert missing.status_code == 200
    assert missing.json() == {"errors": [{"message": "PersistedQueryNotFound",
                                          "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}]}
    registered = await http.post("/graphql", json={"query": QUERY, "extensions": persisted()})
    assert registered.json()["data"]["units"]
    again = await http.post("/graphql", json={"extensions": persisted(), "operationName": "Units"})
    assert again.json()["data"] == registered.json()["data"]
    wrong = await http.post("/graphql", json={"query": "{ units { code } }", "extensions": persisted()})
    assert wrong.status_code == 400
    assert wrong.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_HASH_MISMATCH"
    bad = await http.post("/graphql", json={"extensions": persisted("abc")})
    assert bad.status_code == 400 and "64 lowercase hex digits" in bad.text


async def test_texts_the_guard_refuses_are_not_stored(http: httpx.AsyncClient) -> None:
    for text in ("{ " + "units { code } " * 3000 + "}",  # over MAX_QUERY_CHARS
                 "{ " + "__typename " * 1500 + "}",  # over MAX_TOKENS
                 "{ units { code "):  # does not parse
        digest = hashlib.sha256(text.encode()).hexdigest()
        sent = await http.post("/graphql", json={"query": text, "extensions": persisted(digest)})
        assert sent.json()["errors"], sent.text
        later = await http.post("/graphql", json={"extensions": persisted(digest)})
        assert later.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"


async def test_gets_of_public_persisted_queries_can_be_cached_by_a_cdn(
    http: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    extensions = json.dumps(persisted())
    missing = await http.get("/graphql", params={"extensions": extensions})
    assert missing.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    first = await http.get("/graphql", params={"query": QUERY, "extensions": extensions})
    assert first.status_code == 200 and first.json()["data"]["units"]
    second = await http.get("/graphql", params={"extensions": extensions})
    assert second.json()["data"] == first.json()["data"]
    assert second.json()["extensions"]["cost"]["remaining"] < first.json()["extensions"]["cost"]["remaining"]
    assert second.headers["cache-control"] == "public, max-age=300"
    etag = second.headers["etag"]
    assert etag == first.headers["etag"] and etag.startswith('"')
    not_modified = await http.get("/graphql", params={"extensions": extensions}, headers={"if-none-match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    key = await make_key(conn, ["read"])
    keyed = await http.get("/graphql", params={"extensions": extensions}, headers=bearer(key))
    assert keyed.status_code == 200 and "etag" not in keyed.headers and "public" not in keyed.headers.get(
        "cache-control", "")


@pytest.mark.parametrize("shared", ["redis", "postgres"])
async def test_every_instance_knows_a_persisted_query(database_url: str, empty_catalog: PostgresBackend,
                                                      redis_prefix: str, shared: str) -> None:
    redis = {"redis_url": SHARED_REDIS, "cache_prefix": redis_prefix} if shared == "redis" else {}
    settings = make_settings(database_url, **redis)
    async with app_client(settings) as one, app_client(settings) as two:
        await one.post("/graphql", json={"query": QUERY, "extensions": persisted()})
        answer = await two.post("/graphql", json={"extensions": persisted()})
        assert answer.json()["data"]["units"] is not None


async def test_allow_list_mode_runs_registered_operations_only(
    database_url: str, empty_catalog: PostgresBackend, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await small_catalog(conn)
    writer = await make_key(conn, ["read", "write"])
    async with app_client(make_settings(database_url, anonymous="read", allowlist=True, key_cache_ttl_s=0.2)) as http:
        refused = await http.post("/graphql", json={"query": QUERY})
        assert refused.status_code == 400
        assert refused.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_ALLOWED"
        apq = await http.post("/graphql", json={"query": QUERY, "extensions": persisted()})
        assert apq.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_ALLOWED"  # not a way in
        mutation = await http.post("/graphql", headers=bearer(writer), json={
            "query": 'mutation { createSupplier(name: "Незваный") { errors { code } } }'})
        assert mutation.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_ALLOWED"
        assert await conn.fetchval("SELECT count(*) FROM suppliers WHERE name = 'Незваный'") == 0
        # Registered from the command line (or by registerPersistedQuery, below), the operation runs.
        path = tmp_path / "units.graphql"
        path.write_text(QUERY, encoding="utf-8")
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "server.py", "queries", "register", str(path)],
                                       cwd=ROOT, env={**os.environ, "DATABASE_URL": database_url},
                                       capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.startswith(HASH), done.stderr
        await asyncio.sleep(0.3)  # this instance asked before the registration: its "no" is kept that long
        by_hash = await http.post("/graphql", json={"extensions": persisted()})
        assert by_hash.json()["data"]["units"]
        by_text = await http.post("/graphql", json={"query": QUERY})
        assert by_text.json()["data"] == by_hash.json()["data"]


async def test_admins_register_operations_with_a_mutation(http: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    admin = await make_key(conn, ["admin"])
    register = "mutation($q: String!) { registerPersistedQuery(query: $q) { sha256Hash errors { message } } }"
    done = await http.post("/graphql", headers=bearer(admin), json={"query": register, "variables": {"q": QUERY}})
    assert done.json()["data"]["registerPersistedQuery"] == {"sha256Hash": HASH, "errors": []}
    assert await conn.fetchval("SELECT allowed FROM persisted_queries WHERE sha256 = $1", HASH) is True
    bad = await http.post("/graphql", headers=bearer(admin), json={"query": register, "variables": {"q": "{ units "}})
    assert bad.json()["data"]["registerPersistedQuery"]["errors"][0]["message"].startswith("Syntax Error")
    anonymous = await http.post("/graphql", json={"query": register, "variables": {"q": QUERY}})
    assert anonymous.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
