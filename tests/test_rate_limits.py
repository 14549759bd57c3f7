"""Cost budgets: debited before anything runs, shared by every instance through Redis, and kept
per instance (a share each) while Redis is down."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from backends.postgres import PostgresBackend
from tests.catalog_fixtures import small_catalog
from tests.conftest import app_client, make_settings
from tests.keys import bearer, make_key
from tests.redis_server import OwnRedis
from tests.test_server import free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
UNITS = "{ units { code } }"  # costs 1: one list of objects, scalars below it
PAGE = "{ materials(first: 10) { edges { node { name category { name } } } } }"  # 1 + 10 * (1 + 1 + 1) = 31
SEARCH = '{ search(query: "цемент", mode: TEXT, first: 5) { edges { node { material { name } } } } }'


@pytest.fixture
async def limited(database_url: str, empty_catalog: PostgresBackend) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database_url, anonymous="read", rate_limit=True, debug=False,
                             rate_tiers="anonymous=100/minute;standard=1000/minute;partner=100000/minute")
    async with app_client(settings) as client:
        yield client


async def test_responses_carry_their_cost_and_what_is_left(limited: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    await small_catalog(conn)
    first = await limited.post("/graphql", json={"query": PAGE})
    assert first.json()["extensions"]["cost"] == {"requested": 31, "remaining": 69, "budget": 100,
                                                  "resetSeconds": 60, "shared": False}
    second = await limited.post("/graphql", json={"query": PAGE})  # a response-cache hit is debited too
    assert second.headers["x-cache"] == "hit"
    assert second.json()["extensions"]["cost"]["remaining"] == 38
    third = await limited.post("/graphql", json={"query": PAGE})
    assert third.json()["extensions"]["cost"]["remaining"] == 7
    over = await limited.post("/graphql", json={"query": PAGE})
    assert over.status_code == 429
    assert 1 <= int(over.headers["retry-after"]) <= 60
    [error] = over.json()["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED" and error["extensions"]["retryAfter"] >= 1
    assert "over budget: this request costs 31 points" in error["message"]
    # A key has a budget of its own, at its tier.
    key = await make_key(conn, ["read"], tier="standard")
    keyed = await limited.post("/graphql", json={"query": PAGE}, headers=bearer(key))
    assert keyed.status_code == 200 and keyed.json()["extensions"]["cost"]["budget"] == 1000
    # Mutations through Strawberry's path are refused the same way.
    writer = await make_key(conn, ["read", "write"], tier="standard")
    await limited.post("/graphql", json={"query": PAGE}, headers=bearer(writer))
    mutation = await limited.post("/graphql", headers=bearer(writer), json={
        "query": 'mutation { createSupplier(name: "Бюджет") { supplier { name } errors { code } } }'})
    assert mutation.json()["extensions"]["cost"]["requested"] == 3  # payload 1 + supplier 1 + errors 1
    assert await conn.fetchval("SELECT count(*) FROM suppliers WHERE name = 'Бюджет'") == 1


async def test_over_budget_mutations_get_429_and_write_nothing(database_url: str, empty_catalog: PostgresBackend,
                                                               conn: asyncpg.Connection) -> None:
    settings = make_settings(database_url, anonymous="read", rate_limit=True,
                             rate_tiers="anonymous=10/minute;standard=3/minute")
    writer = await make_key(conn, ["read", "write"])
    create = 'mutation($n: String!) { createSupplier(name: $n) { supplier { name } errors { code } } }'
    async with app_client(settings) as client:
        statuses = [(await client.post("/graphql", headers=bearer(writer),
                                       json={"query": create, "variables": {"n": f"S{i}"}})).status_code
                    for i in range(3)]
        assert statuses == [200, 429, 429]  # each costs 3 of 3
        refused = await client.post("/graphql", headers=bearer(writer), json={"query": create, "variables": {"n": "X"}})
        assert refused.headers["retry-after"] and refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert await conn.fetchval("SELECT count(*) FROM suppliers") == 1


async def test_search_has_a_per_field_limit(database_url: str, empty_catalog: PostgresBackend,
                                            conn: asyncpg.Connection) -> None:
    await small_catalog(conn)
    settings = make_settings(database_url, anonymous="read", rate_limit=True,
                             rate_tiers="anonymous=1000000/minute;standard=1000000/minute")
    async with app_client(settings) as client:
        statuses = Counter()
        for _ in range(125):
            response = await client.post("/graphql", json={"query": SEARCH})
            statuses[response.status_code] += 1
        assert statuses == {200: 120, 429: 5}  # Query.search: 120/minute per caller
        refused = await client.post("/graphql", json={"query": SEARCH})
        assert "Query.search may be called 120/minute" in refused.json()["errors"][0]["message"]
        assert (await client.post("/graphql", json={"query": UNITS})).status_code == 200


# --- three server processes, one Redis -------------------------------------------------------

def start_instance(database_url: str, redis_url: str, prefix: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"TEST_DATABASE_URL", "SEED_DEMO"}}
    env.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "CACHE_PREFIX": prefix, "PORT": str(port),
                "DATA_DIR": str(data_dir), "EMBEDDER": "hash", "QDRANT_URL": ":memory:", "SEARCH_INDEXER": "0",
                "AUTO_MIGRATE": "0", "SEED_DEMO": "0", "RATE_LIMIT": "1", "INSTANCES": "3",
                "RATE_TIERS": "anonymous=30/minute;standard=60/minute;burst=300/minute", "CACHE_WARMUP": "0"})
    proc = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return proc, port


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    redis = OwnRedis()
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
async def three(database_url: str, empty_catalog: object, own_redis: OwnRedis,
                tmp_path: Path) -> AsyncIterator[list[str]]:
    prefix = f"test-limits-{secrets.token_hex(4)}"
    started = [start_instance(database_url, own_redis.url, prefix, tmp_path / str(i)) for i in range(3)]
    try:
        for proc, port in started:
            await asyncio.to_thread(wait_ready, port, proc)
        yield [f"http://127.0.0.1:{port}/graphql" for _, port in started]
    finally:
        for proc, _ in started:
            stop(proc)


async def burst(urls: list[str], key: str, count: int, after: int | None = None,
                then: Any = None) -> list[tuple[int, int, Any]]:
    """`count` requests at once, spread over the instances in turn: (instance, status, body) each;
    `then()` runs (in a thread) once `after` of them have been answered."""
    answered = 0
    reached = asyncio.Event()
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=30)) as http:
        async def one(i: int) -> tuple[int, int, Any]:
            nonlocal answered
            response = await http.post(urls[i % len(urls)], json={"query": UNITS}, headers=bearer(key))
            answered += 1
            if answered == after:
                reached.set()
            return i % len(urls), response.status_code, response.json()

        async def trigger() -> None:
            if then is not None:
                await reached.wait()
                await asyncio.to_thread(then)

        *results, _ = await asyncio.gather(*(one(i) for i in range(count)), trigger())
        return results


async def test_three_instances_admit_exactly_one_budget(three: list[str], conn: asyncpg.Connection) -> None:
    key = await make_key(conn, ["read"], tier="standard")  # 60 points a minute; each request costs 1
    results = await burst(three, key, 150)
    statuses = Counter(status for _, status, _ in results)
    assert statuses == {200: 60, 429: 90}
    remaining = sorted(body["extensions"]["cost"]["remaining"] for _, status, body in results if status == 200)
    assert remaining == list(range(60))  # every debit saw its own count: one shared counter
    assert all(body["extensions"]["cost"]["shared"] for _, status, body in results if status == 200)
    assert {instance for instance, status, _ in results if status == 200} == {0, 1, 2}


async def test_requests_go_on_under_local_counters_when_redis_stops_mid_burst(
    three: list[str], own_redis: OwnRedis, conn: asyncpg.Connection
) -> None:
    key = await make_key(conn, ["read"], tier="burst")  # 300 a minute; 100 per instance while Redis is down
    results = await burst(three, key, 3 * 250, after=60, then=own_redis.stop)
    statuses = Counter(status for _, status, _ in results)
    assert set(statuses) <= {200, 429}  # every request answered: admitted or over budget, never failed
    admitted = [(instance, body["extensions"]["cost"]) for instance, status, body in results if status == 200]
    shared = [cost for _, cost in admitted if cost["shared"]]
    local = Counter(instance for instance, cost in admitted if not cost["shared"])
    assert 60 <= len(shared) <= 300  # counted in Redis until it stopped
    assert local == {0: 100, 1: 100, 2: 100}  # then each instance alone, up to its share of 100
    assert all(cost["budget"] == 100 for _, cost in admitted if not cost["shared"])
    # Still served on local counters once the burst is over (a new client, its own budget).
    other = await make_key(conn, ["read"], tier="standard")
    after = await burst(three, other, 30)
    assert Counter(status for _, status, _ in after) == {200: 30}
    assert not any(body["extensions"]["cost"]["shared"] for _, _, body in after)
