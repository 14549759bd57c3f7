"""Two server processes on one PostgreSQL and one Redis: a write through one is never followed
by a stale read through the other."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from resolvers.ids import to_global_id
from tests.catalog_fixtures import JAN, insert_material, insert_price_list, insert_supplier
from tests.conftest import SHARED_REDIS
from tests.test_server import free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
WRITES = 40
READ = """query($id: ID!) { material(id: $id) { name currentPrices { unitPrice } } }"""
PAGE = """query { materials(first: 5) { edges { node { id name } } } }"""
UPDATE = """mutation($id: ID!, $name: String!) { updateMaterial(id: $id, patch: {name: $name}) { errors { code } } }"""


def start_instance(database_url: str, prefix: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"TEST_DATABASE_URL", "SEED_DEMO"}}
    env.update({"DATABASE_URL": database_url, "REDIS_URL": SHARED_REDIS, "CACHE_PREFIX": prefix, "PORT": str(port),
                "DATA_DIR": str(data_dir), "EMBEDDER": "hash", "QDRANT_URL": ":memory:", "SEARCH_INDEXER": "0",
                "AUTO_MIGRATE": "0", "SEED_DEMO": "0", "ANONYMOUS": "write", "RATE_LIMIT": "0"})
    proc = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return proc, port


@pytest.fixture
async def instances(database_url: str, empty_catalog: object, tmp_path: Path) -> AsyncIterator[list[str]]:
    prefix = f"test-two-{secrets.token_hex(4)}"
    started = [start_instance(database_url, prefix, tmp_path / str(i)) for i in range(2)]
    try:
        for proc, port in started:
            await asyncio.to_thread(wait_ready, port, proc)
        yield [f"http://127.0.0.1:{port}/graphql" for _, port in started]
    finally:
        for proc, _ in started:
            stop(proc)
        client = aioredis.from_url(SHARED_REDIS)
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_a_read_that_starts_after_a_write_returned_sees_it_on_the_other_instance(
    instances: list[str], conn: asyncpg.Connection
) -> None:
    mid = await insert_material(conn, "Цемент v0", "мешок")
    supplier = await insert_supplier(conn, "ООО «СтройТорг»")
    await insert_price_list(conn, supplier, 1, JAN, [(mid, "380.00", "RUB")])
    material = to_global_id("Material", mid)
    returned = 0  # the newest version whose mutation has returned
    stale: list[tuple[int, int]] = []
    reads = 0
    done = asyncio.Event()

    async def post(http: httpx.AsyncClient, url: str, query: str, variables: dict[str, str]) -> dict:
        response = await http.post(url, json={"query": query, "variables": variables}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    async def reader(url: str) -> None:
        nonlocal reads
        async with httpx.AsyncClient() as http:
            while not done.is_set():
                floor = returned
                # One material, and a list it is in: entries of the loaders and of whole responses.
                if reads % 2:
                    data = await post(http, url, READ, {"id": material})
                    name = data["material"]["name"]
                else:
                    data = await post(http, url, PAGE, {})
                    [name] = [e["node"]["name"] for e in data["materials"]["edges"] if e["node"]["id"] == material]
                seen = int(name.rsplit("v", 1)[1])
                reads += 1
                if seen < floor:
                    stale.append((floor, seen))

    async def writer() -> None:
        nonlocal returned
        async with httpx.AsyncClient() as http:
            for version in range(1, WRITES + 1):
                # Writes alternate between the instances; both instances are read all along.
                url = instances[version % 2]
                result = await post(http, url, UPDATE, {"id": material, "name": f"Цемент v{version}"})
                assert result["updateMaterial"]["errors"] == []
                returned = version
                await asyncio.sleep(0.01)  # let the readers fill caches between writes
        done.set()

    await asyncio.gather(writer(), *(reader(url) for url in instances for _ in range(2)))
    assert stale == []
    assert reads > WRITES  # the readers really ran alongside the writes
    async with httpx.AsyncClient() as http:
        for url in instances:
            assert (await post(http, url, READ, {"id": material}))["material"]["name"] == f"Цемент v{WRITES}"
