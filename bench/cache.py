"""The cache's worth: W1/W2 with the cache off and hot, a Zipf mix with writes, and a
serialisation bench on real cached payloads.

    python bench/cache.py                         # bench_catalog (seeded by foundation.py), 2 workers
    python bench/cache.py --duration 5 --parts serial

Runs against `bench_catalog` (bench/foundation.py creates and seeds it) and the Redis at
--redis-url under a key prefix of its own (deleted at the end). Each load run starts a
fresh API process: `off` is CACHE=0 (every request reads PostgreSQL: what a miss costs),
`hot` is CACHE=1 with Redis and the response cache after a warm-up over the same inputs.
The ceiling is foundation's hand-written Starlette + asyncpg app. `zipf` sends material
reads (W1's document) over Zipf-distributed ids of all live materials, with a share of
`updateMaterial` writes (descriptions only, so W1/W2's answers stay what the ceiling says),
and counts the `x-cache` headers. Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import random
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
for path in (str(BENCH_DIR), str(REPO_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)

from foundation import (  # noqa: E402
    DEFAULT_SERVER_URL,
    W1_QUERY,
    W2_QUERY,
    Server,
    free_port,
    global_id,
    pick_inputs,
    servers_stopped_on_exit,
    start_ceiling,
    start_server,
    stop_server,
    wait_ready,
    with_database,
)
from load import Endpoint, LoadResult, Response, install_uvloop, run_load  # noqa: E402

UPDATE = "mutation Touch($id: ID!, $d: String!) { updateMaterial(id: $id, patch: {description: $d}) { errors { code } } }"


def start_api(db_url: str, redis_url: str, prefix: str, cache: bool, workers: int, log_dir: Path) -> Server:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url, "CACHE_PREFIX": prefix,
           "CACHE": "1" if cache else "0", "WORKERS": str(workers), "SEED_DEMO": "0", "HOST": "127.0.0.1",
           "PORT": str(port), "SEARCH_INDEXER": "0", "EMBEDDER": "hash", "QDRANT_URL": ":memory:",
           "RATE_LIMIT": "0",  # one client at full speed: budgets are bench/protection.py's subject
           "ANONYMOUS": "write"}  # the Zipf mix's writes are anonymous (keys are protection.py's subject)
    cmd = [sys.executable, "server.py", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return start_server(f"api-cache-{'on' if cache else 'off'}", cmd, env, port, log_dir)


class CacheHeaders:
    """Counts `x-cache` answers of read requests."""

    def __init__(self, reads: set[int] | None = None) -> None:
        self.reads, self.hit, self.miss, self.other = reads, 0, 0, 0

    def __call__(self, index: int, response: Response) -> None:
        if self.reads is not None and index not in self.reads:
            return
        value = response.headers.get("x-cache")
        if value == "hit":
            self.hit += 1
        elif value == "miss":
            self.miss += 1
        else:
            self.other += 1

    @property
    def ratio(self) -> float:
        total = self.hit + self.miss + self.other
        return self.hit / total if total else float("nan")


def line(label: str, result: LoadResult, headers: CacheHeaders | None = None) -> dict[str, Any]:
    summary = result.summary()
    hits = f", response hits {headers.ratio:.1%}" if headers is not None else ""
    print(f"  {label:<22} {summary['rps']:>8.1f} req/s  p50 {summary['p50_ms']:>6.2f}  p95 {summary['p95_ms']:>6.2f} ms"
          f"  errors {summary['errors']}{hits}", flush=True)
    return {**summary, **({"response_hit_ratio": round(headers.ratio, 4)} if headers else {})}


async def load(ep: Endpoint, reqs: Sequence[bytes], args: argparse.Namespace,
               on_response: Callable[[int, Response], None] | None = None) -> LoadResult:
    return await run_load(ep, reqs, duration=args.duration, concurrency=args.concurrency,
                          request_timeout_s=args.timeout, on_response=on_response)


def zipf_requests(ids: Sequence[int], n: int, s: float, write_share: float, rng: random.Random) -> tuple[
        list[bytes], set[int], list[int]]:
    """`n` request bodies: W1 reads of Zipf-ranked ids, `write_share` of them description writes."""
    weights = [1 / (rank ** s) for rank in range(1, len(ids) + 1)]
    picked = rng.choices(ids, weights=weights, k=n)
    bodies, reads = [], set()
    for i, mid in enumerate(picked):
        gid = global_id("Material", mid)
        if rng.random() < write_share:
            bodies.append(orjson.dumps({"query": UPDATE, "variables": {"id": gid, "d": f"bench {i}"},
                                        "operationName": "Touch"}))
        else:
            reads.add(i)
            bodies.append(orjson.dumps({"query": W1_QUERY, "variables": {"id": gid}, "operationName": "W1"}))
    return bodies, reads, picked


def repeat_share(picked: Sequence[int], reads: set[int], upto: int, start: int = 0) -> float:
    """Share of the reads among requests `start`..`upto` whose id was asked before (from the
    first request on): the hit ratio of a cache that never forgets and is never invalidated
    (the ceiling for a given run length)."""
    seen: set[int] = set()
    repeats = total = 0
    for i in range(min(upto, len(picked))):
        if i in reads and i >= start:
            total += 1
            repeats += picked[i] in seen
        seen.add(picked[i])
    return repeats / total if total else float("nan")


async def run_workloads(args: argparse.Namespace, db_url: str, prefix: str) -> dict[str, Any]:
    rng = random.Random(args.seed)
    inputs = await pick_inputs(db_url, rng, args.w1_inputs, args.w2_categories)
    conn = await asyncpg.connect(db_url)
    try:
        ids = [r[0] for r in await conn.fetch("SELECT id FROM materials WHERE deleted_at IS NULL ORDER BY random()")]
    finally:
        await conn.close()
    log_dir = BENCH_DIR / "results" / "logs"
    figures: dict[str, Any] = {}
    workloads = {"W1": (W1_QUERY, inputs.w1, "/w1"), "W2": (W2_QUERY, inputs.w2, "/w2")}
    parts = set(args.parts.split(","))
    with servers_stopped_on_exit():
        if "load" not in parts:
            workloads = {}
        if workloads:
            ceiling = start_ceiling(db_url, args.workers, 10, log_dir)
            for name, (_, variables, path) in workloads.items():
                ep = ceiling.endpoint(path)
                reqs = [ep.post(orjson.dumps(v)) for v in variables]
                await wait_ready(ceiling, ep, reqs[0])
                await run_load(ep, reqs, duration=args.warmup, concurrency=args.concurrency)
                print(f"ceiling {name}:")
                figures[f"ceiling {name}"] = line("ceiling", await load(ep, reqs, args))
            stop_server(ceiling)
        for cache in (False, True) if workloads else (True,):
            api = start_api(db_url, args.redis_url, prefix, cache, args.workers, log_dir)
            ep = api.endpoint("/graphql")
            for name, (query, variables, _) in workloads.items():
                reqs = [ep.post(orjson.dumps({"query": query, "variables": v, "operationName": name}))
                        for v in variables]
                await wait_ready(api, ep, reqs[0])
                label = "hot" if cache else "off"
                if cache:  # every input once, then a warm-up: the measured run is hot
                    await run_load(ep, reqs, duration=args.warmup, concurrency=args.concurrency)
                headers = CacheHeaders()
                print(f"api {name} cache {label}:")
                figures[f"{name} {label}"] = line(label, await load(ep, reqs, args, headers), headers)
            if cache and "zipf" in parts:
                bodies, reads, picked = zipf_requests(ids, args.zipf_requests, args.zipf_s, args.write_share, rng)
                reqs = [ep.post(b) for b in bodies]
                await wait_ready(api, ep, reqs[0])
                if args.zipf_warmup_requests:  # a fixed point of the sequence, however busy the machine
                    warm = await run_load(ep, reqs, duration=3600, concurrency=args.concurrency,
                                          max_requests=args.zipf_warmup_requests)
                else:
                    warm = await run_load(ep, reqs, duration=args.zipf_warmup, concurrency=args.concurrency)
                # The measured run goes on where the warm-up stopped: replaying the warm-up's
                # own sequence would count its repeats as hits.
                k = warm.requests % len(reqs)
                headers = CacheHeaders({(i - k) % len(reqs) for i in reads})
                print(f"api zipf s={args.zipf_s} over {len(ids)} materials, {args.write_share:.0%} writes, "
                      f"after {warm.requests} requests of warm-up:")
                result = await load(ep, reqs[k:] + reqs[:k], args, headers)
                figures["zipf"] = line("mixed", result, headers)
                ideal = repeat_share(picked, reads, warm.requests + result.requests)
                window = (repeat_share(picked, reads, warm.requests + result.requests, start=warm.requests)
                          if warm.requests + result.requests <= len(picked) else float("nan"))
                print(f"  (a cache that never forgets would hit {window:.1%} of the measured reads, "
                      f"{ideal:.1%} of all reads up to here)")
                figures["zipf"]["ideal_hit_ratio"] = round(ideal, 4)
                figures["zipf"]["ideal_window_hit_ratio"] = round(window, 4)
                if warm.requests + result.requests > len(reqs):
                    print("  WARNING: the run went past --zipf-requests and replayed the sequence: "
                          "its hit ratio counts replays; raise --zipf-requests")
            stop_server(api)
    for name in workloads if "load" in parts else ():
        off, hot, ceil = figures[f"{name} off"]["rps"], figures[f"{name} hot"]["rps"], figures[f"ceiling {name}"]["rps"]
        print(f"{name}: hot/off {hot / off:.2f}x, hot/ceiling {hot / ceil:.2f}x, off/ceiling {off / ceil:.2f}x")
    return figures


async def real_payloads(db_url: str) -> dict[str, Any]:
    """What the cache stores: 50 material rows, their current prices, and a W2-sized response."""
    from backends.catalog import CatalogReader
    from backends.postgres import PostgresBackend
    from backends.prices import PriceReader
    from loaders.cached import plain

    pg = PostgresBackend(db_url, min_size=1, max_size=2)
    async with pg:
        ids = [r[0] for r in await pg.fetch("SELECT material_id FROM current_prices GROUP BY material_id LIMIT 50")]
        rows = plain(await CatalogReader(pg).materials_by_ids(ids))
        prices = plain(await PriceReader(pg).current_prices_by_material_ids(ids))
    response = {"data": {"materials": {"edges": [{"node": {**{k: str(v) for k, v in r.items()}, "currentPrices": [
        {k: str(v) for k, v in p.items()} for p in prices if p["material_id"] == r["id"]]}} for r in rows]}}}
    stored = {"body": orjson.dumps(response), "tags": sorted({f"material:{r['id']}" for r in rows})}
    return {"one material row": rows[0], "50 material rows": rows, "current prices of 50": prices,
            "W2-sized response as a dict": response, "W2-sized response as stored (bytes + tags)": stored}


def serialisation(payloads: dict[str, Any], repeat: int) -> None:
    from backends.cache_codec import decode_frame, encode_frame, pack, unpack

    codecs: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
        "msgpack": (pack, unpack),
        "msgpack+zstd": (lambda v: encode_frame(pack(v), 0), lambda b: unpack(decode_frame(b))),
        "json (stdlib)": (lambda v: json.dumps(v, default=str, ensure_ascii=False).encode(), json.loads),
        "orjson": (lambda v: orjson.dumps(v, default=str), orjson.loads),
        "pickle": (lambda v: pickle.dumps(v, protocol=5), pickle.loads),
    }
    print("serialisation (encode+decode, mean of repeats; json/orjson turn Decimal and datetime into strings):")
    for label, value in payloads.items():
        print(f"  {label}:")
        for codec, (encode, decode) in codecs.items():
            data = encode(value)
            decode(data)  # warm: first calls pay for imports and caches
            started = time.perf_counter()
            for _ in range(repeat):
                decode(encode(value))
            micros = (time.perf_counter() - started) / repeat * 1e6
            print(f"    {codec:<14} {len(data):>8} bytes  {micros:>9.1f} µs")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server-url", default=os.environ.get("BENCH_DATABASE_URL") or DEFAULT_SERVER_URL)
    p.add_argument("--db-name", default="bench_catalog")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL") or "redis://127.0.0.1:6379/0")
    p.add_argument("--parts", default="load,zipf,serial", help="any of load, zipf, serial (default %(default)s)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--duration", type=float, default=8.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--w1-inputs", type=int, default=200)
    p.add_argument("--w2-categories", type=int, default=8)
    p.add_argument("--zipf-s", type=float, default=1.1)
    p.add_argument("--zipf-requests", type=int, default=100_000, help="request bodies rotated through")
    p.add_argument("--zipf-warmup", type=float, default=30.0, help="seconds of the mix before measuring")
    p.add_argument("--zipf-warmup-requests", type=int, default=0,
                   help="requests of the mix before measuring, instead of --zipf-warmup seconds (0: seconds)")
    p.add_argument("--write-share", type=float, default=0.05)
    p.add_argument("--serial-repeat", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    return p


async def main(args: argparse.Namespace) -> None:
    db_url = with_database(args.server_url, args.db_name)
    parts = set(args.parts.split(","))
    if parts & {"load", "zipf"}:
        prefix = f"bench-cache-{secrets.token_hex(3)}"
        try:
            figures = await run_workloads(args, db_url, prefix)
        finally:
            import redis.asyncio as aioredis

            client = aioredis.from_url(args.redis_url)
            keys = [k async for k in client.scan_iter(f"{prefix}:*")]
            for i in range(0, len(keys), 1000):
                await client.delete(*keys[i:i + 1000])
            await client.aclose()
        out = BENCH_DIR / "results" / f"cache-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps(figures, indent=2))
        print(f"written: {out}")
    if "serial" in parts:
        serialisation(await real_payloads(db_url), args.serial_repeat)


if __name__ == "__main__":
    install_uvloop()
    asyncio.run(main(build_parser().parse_args()))
