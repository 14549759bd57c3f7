"""Import benchmark: a large supplier CSV imported end to end, against a raw COPY of the same file.

    python bench/imports.py                     # 100,000 rows into a catalog of 100k materials / 1M prices
    python bench/imports.py --rows 1000000

Steps: make sure `bench_catalog` exists (bench/foundation.py seeds it), copy it to
`bench_import` (CREATE DATABASE ... TEMPLATE, so every run starts from the same catalog),
write a CSV in the supplier export format whose rows half match existing materials (by
name + unit) and half are new, then in the same minute:

- baseline: COPY of the same file into a bare text table (what PostgreSQL alone needs to
  take the bytes in);
- import: `server.py import` in a child process, measured from the outside (wall time) and
  from the inside (peak RSS growth over the process's RSS before the import started).

Prints rows/s, peak RSS growth and the ratio to the COPY baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR))
sys.path.insert(0, str(BENCH_DIR))

from proc_cpu import BACKENDS_SQL, total_cpu_s  # noqa: E402

HEADER = ("name,sku,use_category,unit_price,unit_price_currency,unit_calc_price,unit_calc_price_currency,"
          "buy_price,buy_price_currency,sale_price,sale_price_currency,calc_unit,count,date_price_change\n")


def _with_db(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def prepare(server_url: str, source_db: str, target_db: str) -> str:
    admin = await asyncpg.connect(_with_db(server_url, "postgres"))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", source_db):
            raise SystemExit(f"database {source_db} is missing: run bench/foundation.py once to seed it")
        await admin.execute(f'DROP DATABASE IF EXISTS "{target_db}" WITH (FORCE)')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", source_db)
        await admin.execute(f'CREATE DATABASE "{target_db}" TEMPLATE "{source_db}"')
    finally:
        await admin.close()
    return _with_db(server_url, target_db)


async def write_csv(url: str, path: Path, rows: int, seed: int) -> None:
    """Half the rows name existing materials (name + unit, some by SKU), half are new."""
    rng = random.Random(seed)
    conn = await asyncpg.connect(url)
    try:
        existing = await conn.fetch(
            "SELECT m.name, m.sku, m.unit_code, c.name AS category FROM materials m "
            "LEFT JOIN categories c ON c.id = m.category_id WHERE m.deleted_at IS NULL ORDER BY random() LIMIT $1",
            rows // 2)
    finally:
        await conn.close()
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        for i in range(rows):
            if i % 2 == 0 and i // 2 < len(existing):
                m = existing[i // 2]
                name, sku, unit, category = m["name"], (m["sku"] if i % 4 == 0 else ""), m["unit_code"], m["category"] or ""
            else:
                name, sku, unit, category = f"Профиль направляющий ПН {50 + i % 100}x40 партия {i}", "", "шт", "Профили"
            price = rng.uniform(10, 20000)
            # Decimal commas and thousands spaces, as suppliers write them.
            shown = f"{price:,.2f}".replace(",", " ").replace(".", ",")
            out.write(f'"{name.replace(chr(34), chr(34) * 2)}",{sku},{category},"{shown}",RUB,,,'
                      f"{price * 0.85:.2f},RUB,{price * 1.1:.2f},RUB,{unit},{rng.randint(0, 5000)},15.11.2026\n")


async def copy_baseline(url: str, path: Path) -> float:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE UNLOGGED TABLE IF NOT EXISTS bench_raw (" + ", ".join(
            f"c{i} text" for i in range(14)) + ")")
        await conn.execute("TRUNCATE bench_raw")
        started = time.perf_counter()
        await conn.copy_to_table("bench_raw", source=str(path), format="csv", header=True)
        elapsed = time.perf_counter() - started
        await conn.execute("DROP TABLE bench_raw")
        return elapsed
    finally:
        await conn.close()


def run_import(url: str, path: Path, supplier: str) -> dict:
    env = {**os.environ, "DATABASE_URL": url, "SEED_DEMO": "0"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(path), supplier],
                          env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"import failed:\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = elapsed
    return result


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_kb(*, reset_peak: bool = False) -> int:
    """The process's RSS now; with reset_peak, its high-water mark is reset to it (Linux), so that
    the peak measured after the import is the import's own. ru_maxrss cannot serve: Linux carries
    it over exec from the parent (the bench process that wrote the file)."""
    if reset_peak:
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
        except OSError:
            pass
    return _status_kb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss_kb() -> int:
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(path: str, supplier: str) -> None:
    """Runs one import in this process and prints its figures as JSON."""
    from backends.imports import import_price_list
    from backends.migrator import apply_migrations
    from backends.postgres import PostgresBackend

    async def go() -> dict:
        pg = PostgresBackend(os.environ["DATABASE_URL"], min_size=2, max_size=2)
        async with pg:
            async with pg.pool.acquire() as conn:
                await apply_migrations(conn)
            sid = await pg.fetchval(
                "INSERT INTO suppliers (name) VALUES ($1) ON CONFLICT ((lower(name))) DO UPDATE SET name = EXCLUDED.name "
                "RETURNING id", supplier)
            # Every connection of the pool is open (min_size = max_size): their backends are the import's.
            pids = sorted({r[0] for r in await pg.fetch(
                BACKENDS_SQL)} | {await pg.fetchval("SELECT pg_backend_pid()")})
            server_before = total_cpu_s(pids)
            before = _rss_kb(reset_peak=True)
            client_before = time.process_time()
            phase_cpu: dict[str, float | None] = {}
            mark = server_before

            def phase_done(name: str) -> None:
                nonlocal mark
                now = total_cpu_s(pids)
                phase_cpu[name] = None if now is None or mark is None else round(now - mark, 2)
                mark = now

            started = time.perf_counter()
            result = await import_price_list(pg, sid, path, phase_done=phase_done)
            elapsed = time.perf_counter() - started
            client_cpu = time.process_time() - client_before
            peak = _peak_rss_kb()
            server_after = total_cpu_s(pids)
            server_cpu = None if server_before is None or server_after is None else server_after - server_before
        return {"rows": result.row_count + result.rejected_count, "valid": result.row_count,
                "rejected": result.rejected_count, "created": result.materials_created, "events": result.events,
                "phases": result.phases, "phase_cpu": phase_cpu,
                "import_s": elapsed, "rss_before_mb": before / 1024, "rss_growth_mb": (peak - before) / 1024,
                "server_cpu_s": server_cpu, "client_cpu_s": client_cpu, "loadavg": os.getloadavg()[0]}

    print(json.dumps(asyncio.run(go())))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--server-url", default=os.environ.get("BENCH_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--source-db", default="bench_catalog")
    p.add_argument("--db-name", default="bench_import")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    url = asyncio.run(prepare(args.server_url, args.source_db, args.db_name))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"price-{args.rows}.csv"
        asyncio.run(write_csv(url, path, args.rows, args.seed))
        size_mb = path.stat().st_size / 1e6
        print(f"file: {args.rows} rows, {size_mb:.1f} MB; catalog: {args.source_db} copied to {args.db_name}")
        baseline = asyncio.run(copy_baseline(url, path))
        first = run_import(url, path, "ООО «Бенчмарк»")
        again = run_import(url, path, "ООО «Бенчмарк»")  # the same file again: a duplicate
        baseline2 = asyncio.run(copy_baseline(url, path))
    copy_s = min(baseline, baseline2)
    rate = first["rows"] / first["import_s"]
    print(f"raw COPY of the file:  {args.rows / copy_s:>10,.0f} rows/s ({copy_s:.2f} s, best of 2)")
    print(f"import (end to end):   {rate:>10,.0f} rows/s ({first['import_s']:.2f} s in-process, "
          f"{first['wall_s']:.2f} s with process start)")
    print(f"  {first['valid']} rows landed, {first['rejected']} rejected, {first['created']} materials created, "
          f"{first['events']} events")
    print(f"  phases (s): {first['phases']}")
    print(f"  peak RSS growth {first['rss_growth_mb']:.1f} MB (process RSS before the import "
          f"{first['rss_before_mb']:.0f} MB)")
    print(f"  ratio to raw COPY: {rate / (args.rows / copy_s):.2f}x")
    if first["server_cpu_s"] is not None:
        print(f"  CPU: server {first['server_cpu_s']:.2f} s ({first['rows'] / max(first['server_cpu_s'], 0.01):,.0f} rows "
              f"per server CPU second), client {first['client_cpu_s']:.2f} s; load average at the end "
              f"{first['loadavg']:.1f} on {os.cpu_count()} cores")
        print(f"  server CPU per phase (s): {first['phase_cpu']}")
    print(f"same file again:       {again['import_s']:.2f} s (duplicate detected, nothing changed), "
          f"peak RSS growth {again['rss_growth_mb']:.1f} MB")


if __name__ == "__main__":
    main()
