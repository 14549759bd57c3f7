"""An embedded PostgreSQL (pgserver) of the test's own, in a folder, that a test can stop and start again."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


class OwnPostgres:
    """`start()` (initdb on first use), `stop()` (pg_ctl stop -m fast), `start()` again: same DSN."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self._server: Any = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return str(self._server.get_uri("postgres"))

    def start(self) -> None:
        import pgserver

        if self._server is None:
            self._server = pgserver.get_server(self.folder, cleanup_mode="stop")
        else:
            with self._server._lock:  # pgserver's own start: same socket folder, so the same DSN
                self._server.ensure_postgres_running()

    def stop(self) -> None:
        import pgserver

        pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.folder, user=self._server.system_user)

    def close(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        shutil.rmtree(self.folder, ignore_errors=True)
