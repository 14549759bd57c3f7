"""Subscriptions: price-event fan-out and the catalog export, against a real server process.

    python bench/subscriptions.py fanout --subscribers 1000 --imports 4 --rows 50
    python bench/subscriptions.py export --materials 1000000 --batch 1000

fanout: creates `bench_fanout` (dropped and made anew each run), starts `server.py`, opens
one websocket per subscriber (graphql-transport-ws, spread over client processes), then
commits price-list imports in-process and measures, per delivered event, the time from the
import's commit (when `import_price_list` returned) to its arrival at the client. A run with
one subscriber first is the baseline of the same minute. Prints deliveries/s and p50/p95/p99.

export: uses `bench_export` (seeded once with `server.py seed --materials N`, reused), starts
`server.py` on it, streams `exportMaterials` over a websocket and samples the server's RSS
every 50 ms. Prints rows/s, peak RSS growth, and the rows/s of a plain asyncpg keyset read of
the same rows in this process (the baseline: what PostgreSQL and the driver alone give).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVER = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432")
EVENT_QUERY = "subscription { priceUpdates { cursor price { unitPrice } material { name } } }"
EXPORT_QUERY = ("subscription($n: Int) { exportMaterials(batchSize: $n) { sequence done "
                "materials { id sku name unit { code } } } }")


def _url(database: str) -> str:
    return f"{SERVER.rstrip('/')}/{database}"


def start_server(database: str, port: int, **env: str) -> subprocess.Popen[bytes]:
    values = {k: v for k, v in os.environ.items() if k not in {"TEST_DATABASE_URL", "SEED_DEMO"}}
    values.update({"DATABASE_URL": _url(database), "PORT": str(port), "EMBEDDER": "hash", "QDRANT_URL": ":memory:",
                   "SEARCH_INDEXER": "0", "SEED_DEMO": "0", "CACHE_WARMUP": "0", "DATA_DIR": "/tmp/bench-subs",
                   "SUBSCRIPTIONS_PER_CLIENT": "100000", "PG_POOL_MAX": "10"})
    values.update(env)
    proc = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=values, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server exited during start-up")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not become ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def acknowledged(url: str) -> Any:
    ws = await websockets.connect(url, subprotocols=["graphql-transport-ws"], max_size=None, open_timeout=60)
    await ws.send(json.dumps({"type": "connection_init"}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    return ws


# ---------------------------------------------------------------------------------------------- fan-out

def _subscriber_process(url: str, count: int, expected: int, ready: Any, results: Any) -> None:
    async def main() -> None:
        sockets = []
        for _ in range(count):
            ws = await acknowledged(url)
            await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": {"query": EVENT_QUERY}}))
            sockets.append(ws)
            await asyncio.sleep(0.002)  # do not flood the listen queue
        ready.put(count)
        arrivals: list[tuple[int, float]] = []

        async def read(ws: Any) -> None:
            got = 0
            while got < expected:
                message = json.loads(await ws.recv())
                if message.get("type") == "next":
                    cursor = message["payload"]["data"]["priceUpdates"]["cursor"]
                    import base64

                    arrivals.append((int(base64.urlsafe_b64decode(cursor).decode().split(":")[1]), time.time()))
                    got += 1
                elif message.get("type") == "ping":
                    await ws.send(json.dumps({"type": "pong"}))

        try:
            await asyncio.wait_for(asyncio.gather(*(read(ws) for ws in sockets)), 600)
        finally:
            results.put(arrivals)
            for ws in sockets:
                await ws.close()

    asyncio.run(main())


async def _prepare_fanout(database: str, materials: int) -> tuple[int, list[str]]:
    admin = await asyncpg.connect(_url("postgres"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    from backends.migrator import apply_migrations

    conn = await asyncpg.connect(_url(database))
    await apply_migrations(conn)
    names = [f"Кирпич керамический М{100 + i}" for i in range(materials)]
    await conn.executemany("INSERT INTO materials (name, unit_code) VALUES ($1, 'шт')", [(n,) for n in names])
    supplier = await conn.fetchval("INSERT INTO suppliers (name) VALUES ('ООО «Бенч»') RETURNING id")
    await conn.close()
    return supplier, names


async def _commit_imports(database: str, supplier: int, names: list[str], imports: int) -> list[tuple[int, int, float]]:
    from backends.imports import import_price_list
    from backends.outbox_reader import latest_event_id
    from backends.postgres import PostgresBackend

    commits = []
    async with PostgresBackend(_url(database)) as pg:
        for k in range(imports):
            async with pg.pool.acquire() as conn:
                before = await latest_event_id(conn)
            body = "name,use_category,unit,price\n" + "".join(f"{n},,шт,{10 + k + i / 100:.2f}\n" for i, n in enumerate(names))
            await import_price_list(pg, supplier, io.BytesIO(body.encode()), filename=f"bench-{k}.csv")
            committed = time.time()
            async with pg.pool.acquire() as conn:
                after = await latest_event_id(conn)
            commits.append((before, after, committed))
            await asyncio.sleep(2.0)  # let the burst drain: each import's delays are its own
    return commits


def fanout(subscribers: int, imports: int, rows: int, processes: int, port: int) -> dict[str, Any]:
    database = "bench_fanout"
    supplier, names = asyncio.run(_prepare_fanout(database, rows))
    server = start_server(database, port)
    try:
        ctx = multiprocessing.get_context("spawn")
        ready, results = ctx.Queue(), ctx.Queue()
        per = [subscribers // processes + (1 if i < subscribers % processes else 0) for i in range(processes)]
        workers = [ctx.Process(target=_subscriber_process,
                               args=(f"ws://127.0.0.1:{port}/graphql", n, imports * rows, ready, results))
                   for n in per if n]
        for w in workers:
            w.start()
        for _ in workers:
            ready.get(timeout=600)
        while httpx.get(f"http://127.0.0.1:{port}/health/subscriptions").json()["subscribers"] < subscribers:
            time.sleep(0.1)
        commits = asyncio.run(_commit_imports(database, supplier, names, imports))
        arrivals = [a for _ in workers for a in results.get(timeout=900)]
        for w in workers:
            w.join(timeout=60)
    finally:
        stop(server)
    committed_at = {}
    for before, after, at in commits:
        for event_id in range(before + 1, after + 1):
            committed_at[event_id] = at
    delays = sorted((t - committed_at[e]) * 1000 for e, t in arrivals if e in committed_at)
    # Throughput over the time deliveries were under way: from each import's commit to the
    # last arrival of its events (the pauses between imports are not counted).
    last_arrival: dict[float, float] = {}
    for e, t in arrivals:
        at = committed_at[e]
        last_arrival[at] = max(last_arrival.get(at, at), t)
    span = sum(last - at for at, last in last_arrival.items())
    expected = subscribers * imports * rows
    return {"subscribers": subscribers, "events": imports * rows, "delivered": len(arrivals), "expected": expected,
            "deliveries_per_s": round(len(arrivals) / span), "p50_ms": round(_pct(delays, 50), 1),
            "p95_ms": round(_pct(delays, 95), 1), "p99_ms": round(_pct(delays, 99), 1),
            "max_ms": round(delays[-1], 1)}


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p / 100))]


# ---------------------------------------------------------------------------------------------- export

async def _count_materials(database: str) -> int:
    admin = await asyncpg.connect(_url("postgres"))
    try:
        if not await admin.fetchval("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", database):
            await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(_url(database))
    try:
        if not await conn.fetchval("SELECT to_regclass('materials') IS NOT NULL"):
            return 0
        return int(await conn.fetchval("SELECT count(*) FROM materials WHERE deleted_at IS NULL"))
    finally:
        await conn.close()


def _ensure_export_catalog(database: str, materials: int) -> int:
    if asyncio.run(_count_materials(database)) < materials:
        print(f"seeding {database} with {materials} materials (once; reused by later runs) ...", flush=True)
        env = {**os.environ, "DATABASE_URL": _url(database)}
        subprocess.run([sys.executable, "server.py", "seed", "--materials", str(materials), "--prices",
                        str(materials // 5), "--quiet"], cwd=ROOT, env=env, check=True)
    return asyncio.run(_count_materials(database))


async def _plain_read(database: str, batch: int) -> tuple[int, float]:
    conn = await asyncpg.connect(_url(database))
    started, last, rows = time.perf_counter(), 0, 0
    try:
        while True:
            page = await conn.fetch("SELECT m.id, m.sku, m.name, m.unit_code FROM materials m WHERE m.deleted_at IS NULL "
                                    "AND m.id > $1 ORDER BY m.id LIMIT $2", last, batch)
            rows += len(page)
            if len(page) < batch:
                break
            last = page[-1]["id"]
    finally:
        await conn.close()
    return rows, time.perf_counter() - started


async def _stream_export(url: str, batch: int) -> tuple[int, int, float]:
    ws = await acknowledged(url)
    started = time.perf_counter()
    await ws.send(json.dumps({"type": "subscribe", "id": "x", "payload": {"query": EXPORT_QUERY,
                                                                          "variables": {"n": batch}}}))
    rows = batches = 0
    while True:
        message = json.loads(await ws.recv())
        if message["type"] == "next":
            if message["payload"].get("errors"):
                raise SystemExit(f"export failed: {message['payload']['errors']}")
            rows += len(message["payload"]["data"]["exportMaterials"]["materials"])
            batches += 1
        elif message["type"] == "complete":
            break
        elif message["type"] == "ping":
            await ws.send(json.dumps({"type": "pong"}))
    seconds = time.perf_counter() - started
    await ws.close()
    return rows, batches, seconds


def export(materials: int, batch: int, port: int) -> dict[str, Any]:
    database = "bench_export"
    total = _ensure_export_catalog(database, materials)
    plain_rows, plain_s = asyncio.run(_plain_read(database, batch))
    server = start_server(database, port, EXPORT_MAX_BATCH=str(max(batch, 5000)), CACHE="0")
    try:
        process = psutil.Process(server.pid)
        time.sleep(1.0)
        baseline = process.memory_info().rss
        peak = [baseline]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rows, batches, seconds = asyncio.run(_stream_export(f"ws://127.0.0.1:{port}/graphql", batch))
        done.set()
        sampler.join()
    finally:
        stop(server)
    return {"materials": total, "batch": batch, "rows": rows, "batches": batches, "seconds": round(seconds, 1),
            "rows_per_s": round(rows / seconds), "rss_start_mb": round(baseline / 2**20, 1),
            "rss_peak_mb": round(peak[0] / 2**20, 1), "rss_growth_mb": round((peak[0] - baseline) / 2**20, 1),
            "plain_asyncpg_rows_per_s": round(plain_rows / plain_s),
            "ratio_to_plain": round((rows / seconds) / (plain_rows / plain_s), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fanout")
    f.add_argument("--subscribers", type=int, default=1000)
    f.add_argument("--imports", type=int, default=3, help="price-list imports committed (one after another)")
    f.add_argument("--rows", type=int, default=100, help="prices each import changes (events per import)")
    f.add_argument("--processes", type=int, default=2, help="client processes holding the websockets")
    f.add_argument("--port", type=int, default=8790)
    e = sub.add_parser("export")
    e.add_argument("--materials", type=int, default=1_000_000)
    e.add_argument("--batch", type=int, default=1000)
    e.add_argument("--port", type=int, default=8791)
    args = parser.parse_args()
    if args.what == "fanout":
        baseline = fanout(1, args.imports, args.rows, 1, args.port)
        print("baseline (1 subscriber):", json.dumps(baseline), flush=True)
        result = fanout(args.subscribers, args.imports, args.rows, args.processes, args.port)
        print(f"{args.subscribers} subscribers:", json.dumps(result))
        print(f"p95 delay ratio to the baseline: {result['p95_ms'] / max(baseline['p95_ms'], 0.1):.1f}x")
    else:
        print(json.dumps(export(args.materials, args.batch, args.port)))


if __name__ == "__main__":
    main()
