"""Requests kept going in the background while a test breaks a backend, each one checked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Load:
    served: int = 0
    failures: list[str] = field(default_factory=list)  # bodies of responses that were not a clean 200


@contextlib.asynccontextmanager
async def under_load(http: httpx.AsyncClient, requests: Sequence[tuple[str, dict[str, Any]]],
                     workers: int) -> AsyncIterator[Load]:
    """`workers` tasks POST `requests` (query, variables) round and round until the block ends;
    a response that is not 200 or carries errors is a failure."""
    load = Load()
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            for query, variables in requests:
                response = await http.post("/graphql", json={"query": query, "variables": variables})
                if response.status_code != 200 or "errors" in response.json():
                    load.failures.append(response.text)
                load.served += 1
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    try:
        yield load
    finally:
        stop.set()
        await asyncio.gather(*tasks)
