"""Protection benchmark: how long refusals take, and what auth + cost + budgets add per request.

    python bench/protection.py                     # 2,000 materials, 2000 requests per measured run
    python bench/protection.py --requests 5000 --rounds 5

Everything runs in this process against the whole ASGI app (middleware included) through a
minimal ASGI call, no sockets, so the figures are the server's own CPU per request. It
creates `bench_protection` on $BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432)
once, with a 2,000-material demo catalog, and uses Redis at $BENCH_REDIS_URL (default
redis://127.0.0.1:6379/0) under a key prefix of its own.

Refusals: a 10,000-alias document (refused by the character limit before parsing), the
same flood cut to fit that limit (refused by graphql-core's max_tokens while parsing), a
document nested 14 deep (refused at validation: first sight and again), a page of 5000
(refused before execution), and an over-budget request (429). Overhead: the same stored
response (a response-cache hit, where protection is the largest share of the work) served
without protection (anonymous, no guard), then with an API key, cost and a budget in memory
and in Redis; rounds alternate and the medians give the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from backends.api_keys import hash_key  # noqa: E402
from backends.migrator import apply_migrations  # noqa: E402

PAGE = "query Page { materials(first: 10) { edges { node { id name unit { code } category { name } } } } }"


def with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def prepare(server_url: str) -> str:
    url = with_db(server_url, "bench_protection")
    admin = await asyncpg.connect(with_db(server_url, "postgres"))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = 'bench_protection'"):
            await admin.execute('CREATE DATABASE "bench_protection"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn)
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM materials)"):
            from backends.seed import seed_catalog

            async with conn.transaction():
                await seed_catalog(conn, materials=2000, prices=20000)
    finally:
        await conn.close()
    return url


async def new_key(url: str, tier: str) -> str:
    prefix = secrets.token_hex(4)
    key = f"mgk_{prefix}_{secrets.token_urlsafe(32)}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO api_keys (prefix, secret_hash, name, scopes, tier) VALUES ($1, $2, $3, $4, $5)",
                           prefix, hash_key(key), "bench", ["read"], tier)
    finally:
        await conn.close()
    return key


async def call(app: Any, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """One POST /graphql through the ASGI app, no sockets."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/graphql", "raw_path": b"/graphql", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         *headers], "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)

    async def send(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def build(url: str, redis_url: str | None, prefix: str, rate_limit: bool, tiers: str) -> Any:
    from server import Settings, create_app

    settings = Settings(database_url=url, redis_url=redis_url, cache_prefix=prefix, seed_demo=False,
                        embedder="hash", qdrant_url=":memory:", search_indexer=False, cache_warmup=False,
                        rate_limit=rate_limit, rate_tiers=tiers, data_dir=Path("/tmp/bench-protection"))
    return create_app(settings)


def graphql_view(app: Any) -> Any:
    return next(r.app for r in app.routes if getattr(r, "path", None) == "/graphql" and hasattr(r.app, "_lean"))


async def timed(fn: Callable[[], Any], count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def describe(times: list[float]) -> str:
    times = sorted(times)
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
    return f"p50 {pick(0.5):.3f} ms  p95 {pick(0.95):.3f} ms  p99 {pick(0.99):.3f} ms  (n={len(times)})"


async def refusals(url: str, redis_url: str, prefix: str) -> None:
    app = build(url, redis_url, prefix, True, "anonymous=100/minute;standard=1000000/minute")
    async with app.router.lifespan_context(app):
        flood = "{ " + " ".join(f"a{i}: __typename" for i in range(10_000)) + " }"
        body = orjson.dumps({"query": flood})
        _, answer = await call(app, body, [])
        assert b"QUERY_LIMIT" in answer, answer[:200]
        print(f"10,000-alias document ({len(flood)} chars), refused by MAX_QUERY_CHARS: "
              f"{describe(await timed(lambda: call(app, body, []), 200))}")

        from graphql import GraphQLError, parse

        def parse_flood() -> None:
            try:
                parse(flood, max_tokens=1000)
            except GraphQLError:
                pass

        started = time.perf_counter()
        for _ in range(50):
            parse_flood()
        print(f"   (for comparison, parsing it with max_tokens=1000 alone: {(time.perf_counter() - started) / 50 * 1000:.2f} ms)")
        cut = "{ " + "a: __typename " * 1400 + "}"  # under the character limit, over the token limit
        counter = iter(range(10**9))

        async def token_flood() -> Any:  # a new text each time: no cache helps
            return await call(app, orjson.dumps({"query": cut + " " * next(counter)}), [])

        _, answer = await token_flood()
        assert b"more than 1000 tokens" in answer, answer[:300]
        print(f"token flood ({len(cut)} chars, 2,800+ tokens), refused by max_tokens, each text new: "
              f"{describe(await timed(token_flood, 100))}")
        deep = "{ categories { " + "children { " * 13 + "name" + " }" * 13 + " } }"

        async def deep_new() -> Any:
            return await call(app, orjson.dumps({"query": deep + " " * next(counter)}), [])

        _, answer = await deep_new()
        assert b'"limit":"depth"' in answer, answer[:300]
        print(f"depth 15, refused at validation, each text new: {describe(await timed(deep_new, 200))}")
        deep_body = orjson.dumps({"query": deep})
        print(f"depth 15, the same text again (cached verdict): "
              f"{describe(await timed(lambda: call(app, deep_body, []), 500))}")
        huge = orjson.dumps({"query": "{ materials(first: 5000) { totalCount } }"})
        print(f"first: 5000, refused before execution: {describe(await timed(lambda: call(app, huge, []), 500))}")
        page = orjson.dumps({"query": PAGE})
        while (await call(app, page, []))[0] != 429:
            pass
        print(f"over budget (429 + Retry-After, one Redis INCRBY + TTL): "
              f"{describe(await timed(lambda: call(app, page, []), 500))}")


async def overhead(url: str, redis_url: str, prefix: str, requests: int, rounds: int) -> None:
    tiers = "anonymous=1000000000/minute;standard=1000000000/minute"
    key = await new_key(url, "standard")
    bare = build(url, None, prefix + "-bare", False, tiers)
    memory = build(url, None, prefix + "-mem", True, tiers)
    shared = build(url, redis_url, prefix + "-redis", True, tiers)
    graphql_view(bare)._lean._guard = None  # no scope, cost or page checks at all: the baseline
    body = orjson.dumps({"query": PAGE})
    keyed = [(b"authorization", f"Bearer {key}".encode())]
    runs: dict[str, list[float]] = {"none": [], "key+cost+memory budget": [], "key+cost+Redis budget": []}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    async with bare.router.lifespan_context(bare), memory.router.lifespan_context(memory), \
            shared.router.lifespan_context(shared):
        cases = [("none", bare, []), ("key+cost+memory budget", memory, keyed), ("key+cost+Redis budget", shared, keyed)]
        for _, app, headers in cases:  # warm: documents parsed, response stored, key cached
            for _ in range(200):
                status, answer = await call(app, body, headers)
                assert status == 200, answer[:300]
        for r in range(rounds):
            for name, app, headers in cases if r % 2 == 0 else list(reversed(cases)):
                started, started_cpu = time.perf_counter(), time.process_time()
                for _ in range(requests):
                    await call(app, body, headers)
                runs[name].append((time.perf_counter() - started) / requests * 1e6)
                cpu[name].append((time.process_time() - started_cpu) / requests * 1e6)
    base = statistics.median(runs["none"])
    base_cpu = statistics.median(cpu["none"])
    print(f"\nper request, a response-cache hit of a 10-material page, medians of {rounds} x {requests}"
          " (wall time includes waiting for Redis; CPU time is this process's own):")
    for name, values in runs.items():
        median, median_cpu = statistics.median(values), statistics.median(cpu[name])
        print(f"  {name:24} {median:7.1f} us/request  {1e6 / median:7.0f} req/s  "
              f"throughput ratio {base / median:.3f}x (+{median - base:.1f} us)  CPU {median_cpu:6.1f} us "
              f"(ratio {base_cpu / median_cpu:.3f}x)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"bench-protection-{secrets.token_hex(3)}"
    url = await prepare(server)
    try:
        await refusals(url, redis_url, prefix)
        await overhead(url, redis_url, prefix, args.requests, args.rounds)
    finally:
        import redis.asyncio as aioredis

        client = aioredis.from_url(redis_url)
        keys = [k async for k in client.scan_iter(f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.CRITICAL)
    asyncio.run(main())
