"""CPU seconds of processes, from /proc: what a benchmark's target spent.

On the shared 2-core machine wall time and req/s move by tens of percent with whatever else
runs, while the CPU a server and its PostgreSQL backends spend per request moves far less.
foundation.py, search.py and imports.py report it next to their timings.
"""

from __future__ import annotations

import os

import asyncpg

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The client backends of the connection's database, other than the connection's own.
BACKENDS_SQL = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """Fields 3.. of /proc/<pid>/stat (after the command name), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None


def process_cpu_s(pid: int) -> float | None:
    """utime + stime of one process, seconds (None: it is gone or not visible here)."""
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # proc(5) fields 14, 15


def total_cpu_s(pids: list[int]) -> float | None:
    """The CPU seconds of all of `pids`, or None if any of them cannot be read."""
    readings = [process_cpu_s(pid) for pid in pids]
    return None if any(r is None for r in readings) else sum(r for r in readings if r is not None)


def group_pids(pgid: int) -> list[int]:
    """The processes of a process group (a server and its workers)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None and int(fields[2]) == pgid:  # proc(5) field 5: the process group
                pids.append(int(entry))
    return pids


class CpuMeter:
    """CPU a target spends: its server processes (a process group) and the PostgreSQL backends
    of the benchmark database other than the meter's own connection."""

    def __init__(self, db_url: str, server_pgid: int | None = None) -> None:
        self.db_url = db_url
        self.server_pgid = server_pgid
        self.conn: asyncpg.Connection | None = None

    async def snapshot(self, server_pgid: int | None = None) -> dict[tuple[str, int], float]:
        pgid = server_pgid if server_pgid is not None else self.server_pgid
        if pgid is None:
            raise ValueError("no server process group to measure")
        if self.conn is None:
            self.conn = await asyncpg.connect(self.db_url)
        backends = [r["pid"] for r in await self.conn.fetch(BACKENDS_SQL)]
        readings = {}
        for kind, pids in (("server", group_pids(pgid)), ("postgres", backends)):
            for pid in pids:
                cpu = process_cpu_s(pid)
                if cpu is not None:
                    readings[(kind, pid)] = cpu
        return readings

    @staticmethod
    def spent(before: dict[tuple[str, int], float], after: dict[tuple[str, int], float]) -> dict[str, float]:
        """CPU seconds by kind between two snapshots (a process new since `before` counts whole)."""
        spent = {"server": 0.0, "postgres": 0.0}
        for key, cpu in after.items():
            spent[key[0]] += cpu - before.get(key, 0.0)
        return spent

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None
