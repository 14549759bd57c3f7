"""Subscriptions seen by operations: materials_open_subscriptions on /metrics, and the event
stream sent uncompressed even to a client that accepts every encoding (a real server process)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from backends.metrics import sample_value
from tests.subscription_helpers import WAIT, instances, wait_subscribed


async def open_subscriptions(http: httpx.AsyncClient, url: str) -> float | None:
    text = (await http.get(url.replace("/graphql", "/metrics"))).text
    return sample_value(text, "materials_open_subscriptions")


async def test_open_subscriptions_are_a_gauge_and_event_streams_are_not_compressed(
    database_url: str, empty_catalog: object, tmp_path: Path
) -> None:
    body = {"query": "subscription { priceUpdates { cursor price { unitPrice } } }"}
    async with instances(database_url, tmp_path, 1) as [instance], httpx.AsyncClient(timeout=WAIT) as http:
        assert await open_subscriptions(http, instance.http) == 0
        async with http.stream("POST", instance.http, json=body, headers={
                "Accept": "text/event-stream", "Accept-Encoding": "gzip, br, zstd"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in response.headers
            await wait_subscribed(instance.http, 1)
            assert await open_subscriptions(http, instance.http) == 1
        async with asyncio.timeout(WAIT):  # the server notices the client left
            while True:
                if await open_subscriptions(http, instance.http) == 0:
                    break
                await asyncio.sleep(0.05)
        # The stream is counted as a stream, never as a request's latency (review: hours-long
        # subscriptions would have dominated the request-latency histogram).
        async with asyncio.timeout(WAIT):
            while True:
                text = (await http.get(instance.http.replace("/graphql", "/metrics"))).text
                if sample_value(text, "materials_requests_total", {"outcome": "stream"}):
                    break
                await asyncio.sleep(0.05)
        assert 'outcome="stream"' not in "".join(
            line for line in text.splitlines() if line.startswith("materials_request_seconds"))
