"""A lean closed-loop HTTP/1.1 load generator on raw asyncio streams (loopback only).

`concurrency` keep-alive connections each send one request, wait for the whole response,
and send the next, until `duration` seconds have passed. Request bodies are pre-encoded
and rotated through in order. Per-request latency is recorded; a non-200 status or a JSON
body with a top-level "errors" member is a failure (a few are kept to print).

Why raw streams: on a 2-core machine the client shares the CPU with the servers under test
and PostgreSQL; httpx/aiohttp spend several times more CPU per request than this does,
which would eat into what the servers get. uvloop is used when installed.

    python bench/load.py --url http://127.0.0.1:8000/graphql \\
        --data '{"query": "{ units { code } }"}' --duration 10 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import orjson

ALLOWED_HOSTS = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1"}
MAX_ERROR_SAMPLES = 5


def checked_host(host: str) -> str:
    """The loopback address for `host`; anything but 127.0.0.1/localhost is refused."""
    address = ALLOWED_HOSTS.get(host.lower())
    if address is None:
        raise SystemExit(f"refusing to send load to {host!r}: only 127.0.0.1 or localhost")
    return address


@dataclass(frozen=True)
class Endpoint:
    """A loopback HTTP endpoint: address, port and path."""

    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise SystemExit(f"only http:// URLs are supported (got {url!r})")
        host = checked_host(parts.hostname or "")
        return cls(host, parts.port or 80, parts.path or "/")

    def post(self, body: bytes, extra_headers: Sequence[tuple[str, str]] = ()) -> bytes:
        """A complete pre-encoded keep-alive POST request carrying a JSON body."""
        head = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            "Accept: application/json",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in extra_headers),
        ]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Response:
    """One parsed HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes


class ProtocolError(Exception):
    """The server sent something that is not an HTTP/1.1 response."""


async def read_response(reader: asyncio.StreamReader) -> Response:
    """Reads one response (Content-Length or chunked) from a keep-alive connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
        raise ProtocolError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected
                break
            chunks.append(await reader.readexactly(size + 2))
        body = b"".join(c[:-2] for c in chunks)
    else:
        body = await reader.read()
    return Response(int(status_line[1]), headers, body)


def failure_reason(response: Response) -> str | None:
    """Why a response counts as failed (non-200, or GraphQL errors), or None if it is fine."""
    if response.status != 200:
        return f"HTTP {response.status}: {response.body[:300]!r}"
    # Parse only when the marker is present: most bodies are never decoded.
    if b'"errors"' in response.body:
        try:
            doc = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            return f"invalid JSON: {response.body[:300]!r}"
        if isinstance(doc, dict) and doc.get("errors"):
            return f"GraphQL errors: {orjson.dumps(doc['errors'])[:300].decode(errors='replace')}"
    return None


async def request_once(endpoint: Endpoint, request: bytes, limit_s: float = 30.0) -> Response:
    """Sends one request on a fresh connection and returns the parsed response."""
    async with asyncio.timeout(limit_s):
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        writer.write(request)
        async with asyncio.timeout(limit_s):
            return await read_response(reader)
    finally:
        writer.close()


@dataclass
class LoadResult:
    """Latencies (ns) of completed requests, failures, and the wall time they took."""

    elapsed_s: float
    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies_ns)

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return (self.requests - self.errors) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, p: float) -> float:
        """Nearest-rank percentile of the latencies, in milliseconds."""
        if not self.latencies_ns:
            return math.nan
        ordered = sorted(self.latencies_ns)
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        return ordered[rank - 1] / 1e6

    def summary(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile_ms(50), 2),
            "p95_ms": round(self.percentile_ms(95), 2),
            "p99_ms": round(self.percentile_ms(99), 2),
        }


CONNECT_STAGGER_S = 0.005


async def run_load(
    endpoint: Endpoint,
    requests: Sequence[bytes],
    *,
    duration: float = 10.0,
    concurrency: int = 8,
    request_timeout_s: float = 10.0,
    on_response: Callable[[int, Response], None] | None = None,
    max_requests: int | None = None,
) -> LoadResult:
    """Closed loop: `concurrency` connections, each request sent after the previous answer;
    with `max_requests`, no request starts after that many (whatever the duration left).

    `on_response(index of the request, response)` sees every complete response (bench/cache.py
    counts cache hits with it).

    Bounded: no request starts after `duration` seconds, and each one in flight is given
    at most `request_timeout_s` seconds (a timeout is a failure and the connection is replaced).
    """
    if not requests:
        raise ValueError("no requests to send")
    if duration <= 0 or concurrency < 1:
        raise ValueError("duration must be > 0 and concurrency >= 1")
    result = LoadResult(elapsed_s=0.0)
    latencies = result.latencies_ns
    counter = 0
    n = len(requests)
    clock = time.perf_counter_ns
    started = clock()
    deadline = started + int(duration * 1e9)

    def fail(reason: str) -> None:
        result.errors += 1
        if len(result.error_samples) < MAX_ERROR_SAMPLES:
            result.error_samples.append(reason)

    async def worker(index: int) -> None:
        nonlocal counter
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        # Connections open a few milliseconds apart. Opened all at once, they all wait in
        # the listen queue, and the first uvicorn worker to wake accepts every one of them
        # (asyncio accepts in a loop), leaving the other worker idle for the whole run:
        # seen as API rounds at ~450 instead of ~650 req/s, and a ceiling round served by
        # one worker. Staggered, each accept goes to a worker that is not busy yet.
        await asyncio.sleep(index * CONNECT_STAGGER_S)
        try:
            while clock() < deadline and (max_requests is None or counter < max_requests):
                if writer is None:
                    try:
                        async with asyncio.timeout(request_timeout_s):
                            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
                    except (OSError, TimeoutError) as exc:
                        fail(f"connect: {exc!r}")
                        await asyncio.sleep(0.05)
                        continue
                assert reader is not None
                index = counter % n
                request = requests[index]
                counter += 1
                t0 = clock()
                try:
                    writer.write(request)
                    async with asyncio.timeout(request_timeout_s):  # no extra task per request, unlike wait_for
                        response = await read_response(reader)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ProtocolError, ValueError) as exc:
                    latencies.append(clock() - t0)
                    fail(f"transport: {exc!r}")
                    writer.close()
                    writer = None
                    continue
                latencies.append(clock() - t0)
                if on_response is not None:
                    on_response(index, response)
                reason = failure_reason(response)
                if reason is not None:
                    fail(reason)
                if response.headers.get("connection", "").lower() == "close":
                    writer.close()
                    writer = None
        finally:
            if writer is not None:
                writer.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    result.elapsed_s = (clock() - started) / 1e9
    return result


def install_uvloop() -> bool:
    """Use uvloop's event loop policy when it is installed (less client CPU per request)."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def format_result(label: str, result: LoadResult) -> str:
    s = result.summary()
    return (f"{label}: {s['requests']} requests in {s['elapsed_s']} s, {s['rps']} req/s, "
            f"p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, p99 {s['p99_ms']} ms, errors {s['errors']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Closed-loop HTTP/1.1 POST load against 127.0.0.1 only.")
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/path (or localhost)")
    body = parser.add_mutually_exclusive_group(required=True)
    body.add_argument("--data", help="the JSON request body")
    body.add_argument("--data-file", type=Path, help="a file with one JSON request body per line (rotated)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections (default 8)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds (default 10)")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600:
        parser.error("--duration must be in (0, 600]")
    if not 1 <= args.concurrency <= 256:
        parser.error("--concurrency must be in [1, 256]")
    endpoint = Endpoint.parse(args.url)
    bodies = [args.data.encode()] if args.data else [
        line.encode() for line in args.data_file.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    install_uvloop()
    result = asyncio.run(run_load(endpoint, [endpoint.post(b) for b in bodies], duration=args.duration,
                                  concurrency=args.concurrency, request_timeout_s=args.timeout))
    print(format_result(args.url, result))
    for sample in result.error_samples:
        print(f"  failure: {sample}")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
