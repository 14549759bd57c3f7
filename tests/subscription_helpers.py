"""Real server processes and real clients for the subscription tests (gql over websockets,
raw websockets for protocol errors, httpx for uploads and SSE)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport

from resolvers.ids import to_global_id
from tests.conftest import SHARED_REDIS
from tests.test_server import free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
EVENT_FIELDS = "cursor previousUnitPrice at price { unitPrice currency supplier { id } } material { id name }"
UPLOAD = """mutation($s: ID!, $f: Upload!) { importPriceList(supplierId: $s, file: $f) {
  priceList { id version } errors { message } } }"""
WAIT = 30.0  # seconds a test waits for something that should come at once (generous: a shared machine)


class Instance:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc, self.port = proc, port
        self.http = f"http://127.0.0.1:{port}/graphql"
        self.ws = f"ws://127.0.0.1:{port}/graphql"


def start(database_url: str, data_dir: Path, **env_overrides: str) -> Instance:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"TEST_DATABASE_URL", "SEED_DEMO"}}
    env.update({"DATABASE_URL": database_url, "REDIS_URL": SHARED_REDIS,
                "CACHE_PREFIX": f"test-subs-{secrets.token_hex(4)}", "PORT": str(port), "DATA_DIR": str(data_dir),
                "EMBEDDER": "hash", "QDRANT_URL": ":memory:", "SEARCH_INDEXER": "0", "AUTO_MIGRATE": "0",
                "SEED_DEMO": "0", "CACHE_WARMUP": "0",
                # Not about protection (tests/middleware/test_auth.py, tests/test_rate_limits.py):
                # anonymous callers may write, and no budget runs out in a burst of test requests.
                "ANONYMOUS": "write", "RATE_LIMIT": "0"})
    env.update(env_overrides)
    proc = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return Instance(proc, port)


@asynccontextmanager
async def instances(database_url: str, tmp_path: Path, count: int, **env: str) -> AsyncIterator[list[Instance]]:
    started = [start(database_url, tmp_path / f"instance{i}", **env) for i in range(count)]
    try:
        for instance in started:
            await asyncio.to_thread(wait_ready, instance.port, instance.proc)
        yield started
    finally:
        for instance in started:
            stop(instance.proc)


def price_csv(rows: Sequence[tuple[str, str, str, str]]) -> bytes:
    """A supplier file: (name, category, unit, price) rows."""
    lines = ["name,use_category,unit,price"] + [",".join(r) for r in rows]
    return ("\n".join(lines) + "\n").encode()


async def upload(url: str, supplier_id: int, content: bytes, name: str = "prices.csv") -> dict[str, Any]:
    operations = json.dumps({"query": UPLOAD, "variables": {"s": to_global_id("Supplier", supplier_id), "f": None}})
    async with httpx.AsyncClient(timeout=120) as http:
        response = await http.post(url, headers={"GraphQL-Preflight": "1"},
                                   data={"operations": operations, "map": json.dumps({"0": ["variables.f"]})},
                                   files={"0": (name, content, "text/csv")})
    body = response.json()
    assert response.status_code == 200 and not body.get("errors"), response.text
    assert body["data"]["importPriceList"]["errors"] == [], response.text
    return body["data"]["importPriceList"]


class Subscription:
    """A priceUpdates subscription through gql's websockets transport (graphql-transport-ws),
    collecting events in the background."""

    def __init__(self, url: str, variables: dict[str, Any], fields: str = EVENT_FIELDS) -> None:
        self.url, self.variables, self.fields = url, variables, fields
        self.events: list[dict[str, Any]] = []
        self.error: Exception | None = None
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()

    async def __aenter__(self) -> Subscription:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._started.wait(), WAIT)
        return self

    async def _run(self) -> None:
        transport = WebsocketsTransport(url=self.url, subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL])
        try:
            async with Client(transport=transport) as session:
                stream = session.subscribe(self.document())
                self._started.set()
                async for result in stream:
                    self.events.append(next(iter(result.values())))
                    self._arrived.set()
        except Exception as exc:
            self.error = exc
            self._started.set()
            self._arrived.set()

    def document(self) -> Any:
        args = ", ".join(f"{k}: ${k}" for k in self.variables)
        params = ", ".join(f"${k}: {TYPES[k]}" for k in self.variables)
        request = gql(f"subscription{f'({params})' if params else ''} {{ priceUpdates{f'({args})' if args else ''} "
                      f"{{ {self.fields} }} }}")
        request.variable_values = self.variables
        return request

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        """Waits until `count` events arrived (or the subscription failed); returns them all."""
        async with asyncio.timeout(WAIT):
            while len(self.events) < count and self.error is None:
                self._arrived.clear()
                await self._arrived.wait()
        if self.error is not None and len(self.events) < count:
            raise self.error
        return self.events

    async def wait_error(self) -> Exception:
        async with asyncio.timeout(WAIT):
            while self.error is None:
                self._arrived.clear()
                await self._arrived.wait()
        return self.error

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class ProgressSubscription(Subscription):
    """importProgress(priceListId) through gql's websockets transport."""

    def __init__(self, url: str, price_list_id: str, fields: str) -> None:
        super().__init__(url, {"id": price_list_id}, fields)

    def document(self) -> Any:
        request = gql(f"subscription($id: ID!) {{ importProgress(priceListId: $id) {{ {self.fields} }} }}")
        request.variable_values = self.variables
        return request

    async def wait_for_done(self) -> list[dict[str, Any]]:
        async with asyncio.timeout(WAIT):
            while not (self.events and self.events[-1]["done"]) and self.error is None:
                self._arrived.clear()
                await self._arrived.wait()
        if self.error is not None:
            raise self.error
        return self.events


TYPES = {"materialIds": "[ID!]", "categoryId": "ID", "supplierId": "ID", "after": "String"}


async def wait_hub(url: str, figure: str, expected: int) -> None:
    """Waits until a figure of the instance's hub (GET /health/subscriptions) reaches `expected`."""
    async with httpx.AsyncClient() as http, asyncio.timeout(WAIT):
        while True:
            body = (await http.get(url.replace("/graphql", "/health/subscriptions"))).json()
            if body[figure] >= expected:
                return
            await asyncio.sleep(0.05)


async def wait_subscribed(url: str, expected: int) -> None:
    """Waits until the instance's hub has `expected` subscribers."""
    await wait_hub(url, "subscribers", expected)


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream body."""
    event, data = "", ""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif line == "" and event:
            yield event, data
            event, data = "", ""
