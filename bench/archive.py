"""Archive benchmark: how fast price rows leave `prices`, whole months (DETACH/ATTACH) against
row by row (INSERT ... SELECT over DELETE ... RETURNING), and what readers feel meanwhile.

    python bench/archive.py                          # 1M prices over 12 months, 20k materials
    python bench/archive.py --prices 3000000 --months 24

Steps: seed `bench_archive_src` once (backends.seed, its own database: nothing shared with the
other benchmarks), then for each mode copy it to `bench_archive_run` (CREATE DATABASE ...
TEMPLATE) and archive the lists superseded before the middle month:

- detach: every old month holds only superseded lists, so each is detached from prices and
  attached to prices_archive;
- move: the archive's partitions for those months are created first, which leaves row moves
  as the only way (what happens to months shared with live lists).

While the archive runs, a probe connection reads one material's price history in a loop; the
longest read is how long the archive held readers up. Also the history query (W1's statement)
before and after (and after a VACUUM of prices), to show what reading prices UNION ALL
prices_archive costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import asyncpg

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))

from backends.archive import archive_price_lists  # noqa: E402
from backends.migrator import apply_migrations  # noqa: E402
from backends.postgres import PostgresBackend  # noqa: E402
from backends.prices import PriceReader  # noqa: E402
from backends.seed import seed_catalog  # noqa: E402
from backends.sql import PageSpec  # noqa: E402

SOURCE, RUN = "bench_archive_src", "bench_archive_run"


def _with_db(url: str, name: str) -> str:
    return f"{url.rpartition('/')[0]}/{name}"


async def seed_source(server: str, args: argparse.Namespace) -> None:
    admin = await asyncpg.connect(_with_db(server, "postgres"))
    try:
        comment = f"{args.materials}/{args.prices}/{args.months}"
        row = await admin.fetchrow(
            "SELECT shobj_description(oid, 'pg_database') AS c FROM pg_database WHERE datname = $1", SOURCE)
        if row is not None and row["c"] == comment:
            return
        await admin.execute(f'DROP DATABASE IF EXISTS "{SOURCE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{SOURCE}"')
        conn = await asyncpg.connect(_with_db(server, SOURCE))
        try:
            await apply_migrations(conn)
            started = time.perf_counter()
            async with conn.transaction():
                await seed_catalog(conn, materials=args.materials, prices=args.prices, months=args.months)
            await conn.execute("VACUUM ANALYZE")
            print(f"seeded {SOURCE}: {comment} in {time.perf_counter() - started:.1f} s")
        finally:
            await conn.close()
        await admin.execute(f"COMMENT ON DATABASE \"{SOURCE}\" IS '{comment}'")
    finally:
        await admin.close()


async def fresh_copy(server: str) -> str:
    admin = await asyncpg.connect(_with_db(server, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{RUN}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{RUN}" TEMPLATE "{SOURCE}"')
    finally:
        await admin.close()
    return _with_db(server, RUN)


async def history_ms(pg: PostgresBackend, material_ids: list[int], rounds: int = 300) -> float:
    reader = PriceReader(pg)
    spec = PageSpec(sort="VALID_FROM", descending=True, limit=5)
    from backends.prices import HistorySpec

    for mid in material_ids[:20]:  # plans cached, pages warm
        await reader.history_pages_by_material_ids([mid], HistorySpec(), spec)
    times = []
    for i in range(rounds):
        started = time.perf_counter()
        await reader.history_pages_by_material_ids([material_ids[i % len(material_ids)]], HistorySpec(), spec)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def run(server: str, mode: str) -> dict[str, object]:
    url = await fresh_copy(server)
    pg = PostgresBackend(url, min_size=2, max_size=3, command_timeout=3600)
    async with pg:
        material_ids = [r["id"] for r in await pg.fetch(
            "SELECT material_id AS id FROM current_prices GROUP BY 1 ORDER BY 1 LIMIT 500")]
        first, last = await pg.fetchrow("SELECT min(effective_at), max(effective_at) FROM price_lists")
        before = first + (last - first) / 2 + timedelta(days=3)
        if mode == "move":
            await pg.execute("SELECT ensure_price_archive_partitions($1, $2)", first, last)
        history_before = await history_ms(pg, material_ids)

        stop = asyncio.Event()
        stalls: list[float] = []

        async def probe() -> None:
            probe_conn = await asyncpg.connect(url)
            try:
                i = 0
                while not stop.is_set():
                    started = time.perf_counter()
                    await probe_conn.fetch(
                        "SELECT unit_price FROM price_history WHERE material_id = $1 "
                        "ORDER BY valid_from DESC, id DESC LIMIT 5", material_ids[i % len(material_ids)])
                    stalls.append((time.perf_counter() - started) * 1000)
                    i += 1
                    await asyncio.sleep(0.005)
            finally:
                await probe_conn.close()

        prober = asyncio.create_task(probe())
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        result = await archive_price_lists(pg, before)
        seconds = time.perf_counter() - started
        stop.set()
        await prober
        await pg.execute("ANALYZE prices, prices_archive")
        history_after = await history_ms(pg, material_ids)
        await pg.execute("VACUUM prices")  # what autovacuum does next: the moved rows' dead tuples go
        history_vacuumed = await history_ms(pg, material_ids)
        remaining = await pg.fetchval("SELECT count(*) FROM prices")
    return {
        "mode": mode, "lists": result.price_lists, "rows": result.prices, "attached": len(result.partitions_attached),
        "rows_attached": result.rows_attached, "rows_moved": result.rows_moved, "seconds": seconds,
        "rows_per_s": result.prices / seconds if seconds else 0.0, "left_in_prices": remaining,
        "reader_max_ms": max(stalls, default=0.0), "reader_p50_ms": statistics.median(stalls) if stalls else 0.0,
        "history_before_ms": history_before, "history_after_ms": history_after,
        "history_vacuumed_ms": history_vacuumed, "phases": result.phases,
    }


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server-url", default=os.environ.get("BENCH_DATABASE_URL")
                   or "postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--materials", type=int, default=20_000)
    p.add_argument("--prices", type=int, default=1_000_000)
    p.add_argument("--months", type=int, default=12)
    p.add_argument("--modes", default="detach,move")
    args = p.parse_args()
    await seed_source(args.server_url, args)
    for mode in args.modes.split(","):
        r = await run(args.server_url, mode)
        print(f"{r['mode']:>6}: {r['lists']} lists, {r['rows']} rows ({r['attached']} months attached: "
              f"{r['rows_attached']} rows; {r['rows_moved']} rows moved) in {r['seconds']:.2f} s = "
              f"{r['rows_per_s']:,.0f} rows/s; {r['left_in_prices']} rows left in prices; "
              f"probe reads p50 {r['reader_p50_ms']:.2f} ms, max {r['reader_max_ms']:.1f} ms; "
              f"history query p50 {r['history_before_ms']:.2f} -> {r['history_after_ms']:.2f} ms "
              f"({r['history_vacuumed_ms']:.2f} ms after VACUUM); phases {r['phases']}")
    admin = await asyncpg.connect(_with_db(args.server_url, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{RUN}" WITH (FORCE)')
    finally:
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
