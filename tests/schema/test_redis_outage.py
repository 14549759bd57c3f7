"""Redis stopped and started again under load: no request fails, no stale read, L2 comes back."""

from __future__ import annotations

import asyncio

import asyncpg
import redis.asyncio as aioredis

from resolvers.ids import to_global_id
from tests.catalog_fixtures import JAN, insert_material, insert_price_list, insert_supplier
from tests.conftest import app_client, make_settings
from tests.redis_server import OwnRedis
from tests.request_load import under_load

READ = "query($id: ID!) { material(id: $id) { name currentPrices { unitPrice } } }"
PAGE = "{ materials(first: 5) { edges { node { name } } } }"
RENAME = "mutation($id: ID!, $n: String!) { updateMaterial(id: $id, patch: {name: $n}) { errors { code } } }"


async def test_requests_keep_working_while_redis_is_stopped_and_restarted(
    database_url: str, empty_catalog: object, conn: asyncpg.Connection
) -> None:
    mid = await insert_material(conn, "Цемент v0", "мешок")
    supplier = await insert_supplier(conn, "ООО «СтройТорг»")
    await insert_price_list(conn, supplier, 1, JAN, [(mid, "380.00", "RUB")])
    variables = {"id": to_global_id("Material", mid)}
    redis = OwnRedis()
    redis.start()
    try:
        async with app_client(make_settings(database_url, redis_url=redis.url, cache_prefix="outage")) as http:

            async def rename(version: int) -> None:
                body = (await http.post("/graphql", json={"query": RENAME, "variables": {
                    **variables, "n": f"Цемент v{version}"}})).json()
                assert body["data"]["updateMaterial"]["errors"] == [], body
                read = (await http.post("/graphql", json={"query": READ, "variables": variables})).json()
                assert read["data"]["material"]["name"] == f"Цемент v{version}"

            async with under_load(http, [(READ, variables), (PAGE, {})], workers=3) as load:
                await asyncio.sleep(0.3)
                await rename(1)
                redis.stop()
                await asyncio.sleep(0.3)
                await rename(2)  # written while Redis is down: still no stale read
                redis.start()
                await rename(3)
                client = aioredis.from_url(redis.url)
                try:
                    for _ in range(100):  # the cache tries Redis again a moment after a failure
                        if await client.dbsize() > 0:
                            break
                        await asyncio.sleep(0.1)
                    assert await client.dbsize() > 0  # entries written to L2 again
                finally:
                    await client.aclose()
    finally:
        redis.stop()
    assert load.failures == []
    assert load.served > 20
