"""The GraphQL-over-HTTP conformance audit of the graphql-http npm package (auditServer) against a
live server process, as shipped: every check passes, without a warning or a notice.

The package versions are pinned in tests/conformance/package-lock.json; `npm ci` installs them
once into a cache folder (XDG_CACHE_HOME or ~/.cache) named after the lock file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_server import free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = Path(__file__).resolve().parent / "conformance"


def audit_folder() -> Path:
    """A folder with the pinned packages installed (installed here the first time)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed for the GraphQL-over-HTTP audit (Debian: apt install nodejs npm)")
    lock = (CONFORMANCE / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "materials-graphql" / f"conformance-{hashlib.sha256(lock).hexdigest()[:12]}"
    for name in ("package.json", "package-lock.json", "audit.mjs"):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CONFORMANCE / name, folder / name)
    if not (folder / "node_modules" / "graphql-http" / "package.json").is_file():
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"npm ci failed: {done.stderr}"
    return folder


def start_server(database_url: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A server with the shipped protection settings (anonymous reads, rate limits on)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"TEST_DATABASE_URL", "SEED_DEMO"}}
    env.update({"DATABASE_URL": database_url, "PORT": str(port), "DATA_DIR": str(data_dir), "EMBEDDER": "hash",
                "QDRANT_URL": ":memory:", "SEARCH_INDEXER": "0", "AUTO_MIGRATE": "0", "SEED_DEMO": "0"})
    proc = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return proc, port


async def test_graphql_over_http_audit_passes(database_url: str, empty_catalog: object, tmp_path: Path) -> None:
    folder = await asyncio.to_thread(audit_folder)
    proc, port = start_server(database_url, tmp_path)
    try:
        await asyncio.to_thread(wait_ready, port, proc)
        done = await asyncio.to_thread(subprocess.run, ["node", "audit.mjs", f"http://127.0.0.1:{port}/graphql"],
                                       cwd=folder, capture_output=True, text=True, timeout=120)
    finally:
        stop(proc)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) > 50  # the whole audit ran
    failed = [f"{r['status']}: {r['name']}: {r['reason']} ({r['response']})" for r in results if r["status"] != "ok"]
    assert failed == []
