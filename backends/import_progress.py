"""An import's progress, published with pg_notify on channel `import_progress`.

The import runs in one transaction, and a NOTIFY inside it would be delivered only at
commit; progress therefore goes out on a pooled connection of its own, in autocommit, in
order (one sender task), at most every `interval` seconds plus the first and the last
message. Every instance's event hub LISTENs on the channel too and hands the messages to
its `importProgress` subscribers, so an import running on any instance is seen on all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

import orjson

from backends.postgres import PostgresBackend

log = logging.getLogger(__name__)
CHANNEL = "import_progress"
HEARTBEAT_S = 1.0  # a running import says where it is at least this often


class ProgressPublisher:
    """`started(...)` once the price list's id is reserved, `rows(n)` per chunk, `await finish()`."""

    def __init__(self, pg: PostgresBackend, *, interval: float = 0.2) -> None:
        self.pg, self.interval = pg, interval
        self.state: dict[str, Any] | None = None
        self._last_sent = 0.0
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None

    def started(self, price_list_id: int, supplier_id: int, version: int, filename: str | None, checksum: str,
                effective_at: datetime, total_rows: int | None) -> None:
        self.state = {"priceListId": price_list_id, "supplierId": supplier_id, "version": version,
                      "filename": filename, "checksum": checksum, "effectiveAt": effective_at.isoformat(),
                      "uploadedAt": datetime.now(effective_at.tzinfo).isoformat(), "processedRows": 0,
                      "totalRows": total_rows, "done": False, "failed": None}
        self._sender = asyncio.get_running_loop().create_task(self._send_all(), name="import-progress")
        self._publish()

    def rows(self, count: int) -> None:
        if self.state is None:
            return
        self.state["processedRows"] += count
        if time.monotonic() - self._last_sent >= self.interval:
            self._publish()

    async def finish(self, *, failed: str | None = None) -> None:
        """The last message (done, or failed with the reason), then waits for the sender."""
        if self.state is None or self._sender is None:
            return
        self.state.update(done=failed is None, failed=failed)
        if failed is None:
            self.state["totalRows"] = self.state["processedRows"]
        self._publish()
        self._queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.shield(self._sender)

    def _publish(self) -> None:
        assert self.state is not None
        self._last_sent = time.monotonic()
        self._queue.put_nowait(orjson.dumps(self.state).decode())

    async def _send_all(self) -> None:
        payload: str | None = ""
        while True:
            try:
                async with asyncio.timeout(HEARTBEAT_S):
                    payload = await self._queue.get()
            except TimeoutError:
                # The set-based phases after the rows are read send nothing of their own: say
                # again where the import is, so a watcher can tell "running" from "gone".
                assert self.state is not None
                payload = orjson.dumps(self.state).decode()
            if payload is None:
                return
            try:
                await self.pg.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
            except Exception as exc:  # progress is a courtesy: the import goes on without it
                log.warning("import progress not published: %s", exc)
