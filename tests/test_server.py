"""The server as a user starts it: the command line, and the embedded default with no services."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "server.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_every_subcommand_has_help() -> None:
    top = run_cli("--help")
    assert top.returncode == 0
    for command in ("serve", "migrate", "seed", "import", "reindex", "archive"):
        assert command in top.stdout
        sub = run_cli(command, "--help")
        assert sub.returncode == 0 and "usage:" in sub.stdout, sub.stderr


async def test_archive_command_moves_old_lists_and_says_what_it_did(database_url: str, conn: asyncpg.Connection) -> None:
    from tests.backends.test_archive import LATER, drop_archive_partitions, two_suppliers

    await drop_archive_partitions(conn)
    await two_suppliers(conn)
    env = {**os.environ, "DATABASE_URL": database_url}
    command = [sys.executable, "server.py", "archive", "--before", LATER.date().isoformat()]
    dry = await asyncio.to_thread(subprocess.run, [*command, "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=120)
    assert "would archive 2 price list(s), 10 prices: 5 in 1 attached month(s)" in dry.stdout, dry.stderr
    assert await conn.fetchval("SELECT count(*) FROM prices_archive") == 0
    done = await asyncio.to_thread(subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=120)
    assert done.returncode == 0, done.stderr
    assert "archived 2 price list(s), 10 prices: 5 in 1 attached month(s) (prices_archive_2024_01), 5 moved" in done.stdout
    assert await conn.fetchval("SELECT count(*) FROM prices_archive") == 10
    audit = await conn.fetchrow("SELECT actor, outcome, detail FROM audit_log WHERE operation = 'archivePriceLists'")
    assert (audit["actor"], audit["outcome"], audit["detail"]["prices"]) == ("cli", "ok", 10)
    again = await asyncio.to_thread(subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True,
                                   timeout=120)
    assert "archived 0 price list(s), 0 prices" in again.stdout


def test_bad_setting_is_named() -> None:
    env = {**os.environ, "PORT": "eighty"}
    done = subprocess.run([sys.executable, "server.py", "migrate"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "PORT must be a whole number (got 'eighty')" in done.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "TEST_DATABASE_URL", "SEED_DEMO"}}
    env.update({"DATA_DIR": str(data_dir), "PORT": str(port)})
    return subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError("server did not become ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


COUNT = "{ materials(first: 3) { totalCount edges { node { name unit { code } currentPrices { unitPrice } } } } }"


def test_embedded_default_serves_a_demo_catalog_and_keeps_it_across_restarts(tmp_path: Path) -> None:
    from server import DEMO_MATERIALS

    port = free_port()
    proc = start_server(tmp_path, port)
    try:
        wait_ready(port, proc)
        first = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": COUNT}, timeout=30).json()
        assert first["data"]["materials"]["totalCount"] == DEMO_MATERIALS
        assert len(first["data"]["materials"]["edges"]) == 3
        page = httpx.get(f"http://127.0.0.1:{port}/graphql", headers={"Accept": "text/html"}, timeout=10)
        assert "graphiql-assets/graphiql.min.js" in page.text
    finally:
        stop(proc)
    assert (tmp_path / "pg" / "PG_VERSION").is_file()
    # A server stopped with SIGTERM (as service managers stop it) stops its embedded PostgreSQL.
    assert proc.returncode == 128 + signal.SIGTERM
    assert not (tmp_path / "pg" / "postmaster.pid").exists()

    proc = start_server(tmp_path, port)
    try:
        wait_ready(port, proc)
        again = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": COUNT}, timeout=30).json()
        assert again["data"] == first["data"]  # same data folder, no second demo load
    finally:
        stop(proc)
