"""`serve --workers 2`: /metrics adds up both workers' counters (prometheus-client multiprocess mode),
and the server logs one JSON line per request."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from backends.metrics import sample_value
from tests.test_server import free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
QUERY = "query Workers { units { code } }"
REQUESTS = 60


async def test_metrics_of_all_workers_are_merged(database_url: str, empty_catalog: object, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"TEST_DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR"}}
    env.update({"DATABASE_URL": database_url, "PORT": str(port), "WORKERS": "2", "DATA_DIR": str(tmp_path),
                "EMBEDDER": "hash", "QDRANT_URL": ":memory:", "SEARCH_INDEXER": "0", "AUTO_MIGRATE": "0",
                "SEED_DEMO": "0", "CACHE_WARMUP": "0", "RESPONSE_CACHE": "0"})
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=env, stdout=log, stderr=log)  # noqa: ASYNC220
        try:
            await asyncio.to_thread(wait_ready, port, proc)
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                # New connections each time, so both workers get requests.
                for _ in range(REQUESTS):
                    async with httpx.AsyncClient(base_url=base, timeout=30) as one:
                        response = await one.post("/graphql", json={"query": QUERY})
                        assert response.status_code == 200 and "errors" not in response.json()
                text = (await http.get("/metrics")).text
            assert sample_value(text, "materials_requests_total", {"operation": "Workers", "outcome": "ok"}) \
                == REQUESTS
            assert sample_value(text, "materials_request_seconds_count", {"operation": "Workers", "outcome": "ok"}) \
                == REQUESTS
            # Pool gauges add up over live workers: two pools of PG_POOL_MAX (10) connections each.
            assert sample_value(text, "materials_pg_pool_connections", {"pool": "primary", "state": "max"}) == 20
        finally:
            stop(proc)
    lines = [orjson.loads(line) for line in log_path.read_bytes().splitlines() if line.startswith(b"{")]
    requests = [line for line in lines if line.get("message") == "request" and line.get("operation") == "Workers"]
    assert len(requests) == REQUESTS
    assert all(r["requestId"] and r["durationMs"] > 0 and r["outcome"] == "ok" for r in requests)
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # uvicorn's own records are JSON too
