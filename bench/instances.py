"""Several instances on one machine, and what tracing costs.

    python bench/instances.py                         # bench_catalog (foundation.py seeds it)
    python bench/instances.py --duration 6 --layouts 1x1,2x1,3x1,1x2,2x2,3x2 --tracing

Starts N server processes (`server.py serve --workers W`) on one PostgreSQL and one Redis
(shared cache prefix, so any instance may answer any request, as behind a load balancer),
and spreads the load generator's connections over them round robin (connection i goes
to instance i mod N). Each layout is measured in its own run: req/s and p50/p95/p99, and
their ratios to the first layout (1x1: one process, one worker). The workload is W1 and W2
of foundation.py with the response cache off, so every request executes (the loaders' cache
stays on): CPU-bound work that should scale with processes up to the core count, not beyond.

`--tracing` then compares one layout with tracing off, sampled (TRACE_SAMPLE_RATIO, spans
exported over OTLP/HTTP to a sink process that accepts and drops them) and at ratio 1.0.
After every run /metrics of the first instance is scraped and its request count printed.
Load goes to 127.0.0.1 only; every server started here is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import secrets
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
    pick_inputs,
    servers_stopped_on_exit,
    start_server,
    stop_server,
    wait_ready,
    with_database,
)
from load import Endpoint, LoadResult, install_uvloop, request_once, run_load  # noqa: E402

from backends.metrics import sum_values  # noqa: E402

SINK = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


@dataclass(frozen=True)
class Layout:
    processes: int
    workers: int

    @classmethod
    def parse(cls, text: str) -> Layout:
        try:
            processes, workers = (int(p) for p in text.lower().split("x"))
        except ValueError:
            raise SystemExit(f"a layout is PROCESSESxWORKERS, like 2x2 (got {text!r})") from None
        if not (1 <= processes <= 8 and 1 <= workers <= 8):
            raise SystemExit(f"layout {text}: 1..8 processes of 1..8 workers")
        return cls(processes, workers)

    def __str__(self) -> str:
        return f"{self.processes}x{self.workers}"


def start_instance(i: int, db_url: str, redis_url: str, prefix: str, workers: int, log_dir: Path,
                   extra: dict[str, str]) -> Server:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url, "CACHE_PREFIX": prefix,
           "RESPONSE_CACHE": "0", "WORKERS": str(workers), "SEED_DEMO": "0", "AUTO_MIGRATE": "0",
           "SEARCH_INDEXER": "0", "CACHE_WARMUP": "0", "EMBEDDER": "hash", "QDRANT_URL": ":memory:",
           "HOST": "127.0.0.1", "PORT": str(port), "LOG_FORMAT": "json",
           "RATE_LIMIT": "0", **extra}  # one client at full speed would be over any anonymous budget
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [sys.executable, "server.py", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return start_server(f"instance-{i}", cmd, env, port, log_dir)


async def measure(layout: Layout, requests: list[bytes], args: argparse.Namespace, db_url: str,
                  extra: dict[str, str] | None = None) -> tuple[LoadResult, float]:
    """One run: start the instances, warm up, load them round robin; (merged result, requests on /metrics)."""
    prefix = f"bench-instances-{secrets.token_hex(3)}"
    servers = [start_instance(i, db_url, args.redis_url, prefix, layout.workers, args.log_dir, extra or {})
               for i in range(layout.processes)]
    try:
        endpoints = [s.endpoint("/graphql") for s in servers]
        for server, endpoint in zip(servers, endpoints, strict=True):
            await wait_ready(server, endpoint, requests[0])
        per = max(1, args.concurrency // layout.processes)
        await asyncio.gather(*(run_load(e, requests, duration=min(2.0, args.duration), concurrency=per)
                               for e in endpoints))  # warm-up: plans, loaders' cache, connections
        results = await asyncio.gather(*(run_load(e, requests, duration=args.duration, concurrency=per)
                                         for e in endpoints))
        merged = LoadResult(elapsed_s=max(r.elapsed_s for r in results))
        for r in results:
            merged.latencies_ns.extend(r.latencies_ns)
            merged.errors += r.errors
            merged.error_samples.extend(r.error_samples)
        scrape = await request_once(Endpoint("127.0.0.1", servers[0].port, "/metrics"), get_request(servers[0].port))
        counted = sum_values(scrape.body.decode(), "materials_requests_total") if scrape.status == 200 else math.nan
        return merged, counted
    finally:
        for server in servers:
            stop_server(server)


def get_request(port: int) -> bytes:
    return f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()


def row(label: str, result: LoadResult, base: LoadResult | None, note: str = "") -> str:
    s = result.summary()
    if base is None:
        ratios = "baseline"
    else:
        b = base.summary()
        ratios = (f"x{s['rps'] / b['rps']:.2f} req/s, p50 x{s['p50_ms'] / b['p50_ms']:.2f}, "
                  f"p95 x{s['p95_ms'] / b['p95_ms']:.2f}, p99 x{s['p99_ms'] / b['p99_ms']:.2f}")
    return (f"{label:<22} {s['rps']:>8.0f} req/s  p50 {s['p50_ms']:>6.2f}  p95 {s['p95_ms']:>6.2f}  "
            f"p99 {s['p99_ms']:>6.2f} ms  errors {s['errors']:<3} {ratios}{note}")


async def run(args: argparse.Namespace) -> int:
    db_url = with_database(args.server_url, args.db_name)
    inputs = await pick_inputs(db_url, random.Random(7), 200, 10)
    bodies = [orjson.dumps({"query": W1_QUERY, "variables": v}) for v in inputs.w1]
    bodies += [orjson.dumps({"query": W2_QUERY, "variables": v}) for v in inputs.w2] * 4
    random.Random(11).shuffle(bodies)
    requests = [Endpoint("127.0.0.1", 0, "/graphql").post(b) for b in bodies]
    print(f"cores: {os.cpu_count()}; workload: W1 + W2 mix, {len(bodies)} bodies, response cache off; "
          f"{args.concurrency} connections, {args.duration:g} s per run")
    base: LoadResult | None = None
    for layout in args.layouts:
        result, counted = await measure(layout, requests, args, db_url)
        print(row(f"{layout} (proc x workers)", result, base, f"  [/metrics of instance 1: {counted:.0f} requests]"),
              flush=True)
        for sample in result.error_samples[:2]:
            print("   error:", sample)
        base = base or result
    if args.tracing:
        await compare_tracing(requests, args, db_url)
    return 0


async def compare_tracing(requests: list[bytes], args: argparse.Namespace, db_url: str) -> None:
    """Tracing off, sampled and always, alternating in each round (the order flips every round);
    medians over the rounds, each against the off run of its own round."""
    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(sink_port)], stdin=subprocess.DEVNULL)  # noqa: ASYNC220
    layout = Layout(1, 1)  # one process: no accept imbalance between workers in the comparison
    configs = {"tracing off": {"TRACING": "0"}}
    for ratio in (args.sample_ratio, 1.0):
        configs[f"traced, ratio {ratio:g}"] = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                                               "TRACE_SAMPLE_RATIO": str(ratio)}
    runs: dict[str, list[LoadResult]] = {name: [] for name in configs}
    try:
        print(f"\ntracing overhead ({layout}; spans exported over OTLP/HTTP to a local sink; "
              f"{args.rounds} alternating rounds):")
        for round_no in range(args.rounds):
            order = list(configs) if round_no % 2 == 0 else list(reversed(configs))
            for name in order:
                result, _ = await measure(layout, requests, args, db_url, configs[name])
                runs[name].append(result)
                print(f"  round {round_no + 1}: {row(name, result, None).replace('baseline', '')}", flush=True)
    finally:
        sink.terminate()
        sink.wait(10)
    median = statistics.median
    off = runs["tracing off"]
    for name, results in runs.items():
        rps = median([r.rps for r in results])
        p50 = median([r.percentile_ms(50) for r in results])
        p95 = median([r.percentile_ms(95) for r in results])
        line = f"{name:<22} median {rps:>6.0f} req/s  p50 {p50:>6.2f}  p95 {p95:>6.2f} ms"
        if name != "tracing off":
            ratio = median([r.rps / o.rps for r, o in zip(results, off, strict=True)])
            p95_ratio = median([r.percentile_ms(95) / o.percentile_ms(95) for r, o in zip(results, off, strict=True)])
            line += f"  x{ratio:.2f} req/s, p95 x{p95_ratio:.2f} (median of per-round ratios)"
        print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Throughput with 1..N server processes on one machine.")
    parser.add_argument("--server-url", default=DEFAULT_SERVER_URL, help="PostgreSQL server (127.0.0.1)")
    parser.add_argument("--db-name", default="bench_catalog", help="a database foundation.py seeded")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--layouts", default="1x1,2x1,3x1,1x2,2x2,3x2",
                        help="PROCESSESxWORKERS, comma-separated; the first is the baseline")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run (default 8)")
    parser.add_argument("--concurrency", type=int, default=12, help="connections in all (default 12)")
    parser.add_argument("--tracing", action="store_true", help="also measure tracing off / sampled / always")
    parser.add_argument("--sample-ratio", type=float, default=0.1, help="the sampled ratio (default 0.1)")
    parser.add_argument("--rounds", type=int, default=3, help="tracing comparison rounds (default 3)")
    parser.add_argument("--log-dir", type=Path, default=BENCH_DIR / "results" / "instances")
    args = parser.parse_args(argv)
    args.layouts = [Layout.parse(t) for t in args.layouts.split(",") if t.strip()]
    if not 0 < args.duration <= 120:
        parser.error("--duration must be in (0, 120]")
    install_uvloop()
    with servers_stopped_on_exit():
        return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
