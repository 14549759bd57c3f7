"""/health/live and /health/ready: each backend's state; optional ones down = degraded but ready."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.conftest import app_client, make_settings
from tests.redis_server import OwnRedis


async def test_ready_reports_every_backend_and_stays_ready_when_redis_is_down(
    database_url: str, empty_catalog: object
) -> None:
    redis = OwnRedis()
    redis.start()
    try:
        settings = make_settings(database_url, redis_url=redis.url, cache_prefix=f"health-{secrets.token_hex(3)}")
        async with app_client(settings) as http:
            assert (await http.get("/health/live")).json() == {"status": "ok"}
            up = await http.get("/health/ready")
            report = up.json()
            assert up.status_code == 200 and report["status"] == "ready", report
            for backend in ("postgres", "redis", "vectorStore", "embedder"):
                assert report[backend]["status"] == "up", report
                assert report[backend]["latencyMs"] >= 0
            assert report["postgres"]["pendingMigrations"] == []
            assert report["postgres"]["max"] == settings.pg_pool_max

            redis.stop()
            down = await http.get("/health/ready")
            report = down.json()
            assert down.status_code == 200 and report["status"] == "degraded", report
            assert report["redis"]["status"] == "down" and report["redis"]["error"]
            assert report["postgres"]["status"] == "up"
            metrics = (await http.get("/metrics")).text
            assert 'materials_backend_up{backend="redis"} 0.0' in metrics

            redis.start()  # back without a restart of the app
            again = (await http.get("/health/ready")).json()
            assert again["status"] == "ready" and again["redis"]["status"] == "up", again
    finally:
        redis.stop()


async def test_not_ready_while_migrations_are_pending(database_url: str) -> None:
    parts = urlsplit(database_url)
    name = f"materials_unmigrated_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
        # The event hub (subscriptions) needs the events table to start at all: off here.
        settings = make_settings(url, auto_migrate=False, search_indexer=False, cache_warmup=False,
                                 subscriptions=False)
        async with app_client(settings) as http:
            response = await http.get("/health/ready")
            report = response.json()
            assert response.status_code == 503 and report["status"] == "not ready", report
            assert report["postgres"]["status"] == "migrating"
            assert report["postgres"]["pendingMigrations"][0].startswith("0001")
            assert (await http.get("/health/live")).status_code == 200  # the process itself is fine
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
