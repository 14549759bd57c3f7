"""Security headers, CORS, the websocket Origin check, body and upload size limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from backends.postgres import PostgresBackend
from tests.conftest import app_client, make_settings

QUERY = {"query": "{ units { code } }"}


@pytest.fixture
async def http(database_url: str, empty_catalog: PostgresBackend) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database_url, cors_origins="https://shop.example", max_body_bytes=2000,
                             max_upload_bytes=5000)
    async with app_client(settings) as client:
        yield client


async def test_every_response_carries_the_security_headers(http: httpx.AsyncClient) -> None:
    for response in (await http.post("/graphql", json=QUERY), await http.get("/health/live"),
                     await http.get("/graphql", headers={"accept": "text/html"})):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_cors_allows_the_configured_origins_only(http: httpx.AsyncClient) -> None:
    preflight = {"origin": "https://shop.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization, content-type"}
    allowed = await http.options("/graphql", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = await http.options("/graphql", headers={**preflight, "origin": "https://evil.example"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    simple = await http.post("/graphql", json=QUERY, headers={"origin": "https://shop.example"})
    assert simple.headers["access-control-allow-origin"] == "https://shop.example"
    assert "access-control-allow-origin" not in (await http.post("/graphql", json=QUERY,
                                                                 headers={"origin": "https://evil.example"})).headers


async def test_large_bodies_and_uploads_get_413(http: httpx.AsyncClient) -> None:
    big = {"query": "{ units { code } }", "variables": {"pad": "x" * 3000}}
    response = await http.post("/graphql", json=big)
    assert response.status_code == 413
    assert response.json()["errors"][0]["message"].startswith("the request body is larger than 2000 bytes")
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"

    async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"query": "{ units { code } }", "variables": {"pad": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}}'

    chunked = await http.post("/graphql", content=streamed(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    operations = '{"query": "mutation($f: Upload!) { importPriceList(supplierId: \\"x\\", file: $f) { duplicate } }", ' \
                 '"variables": {"f": null}}'
    files = {"operations": (None, operations), "map": (None, '{"0": ["variables.f"]}'),
             "0": ("prices.csv", b"name;price\n" + b"a;1\n" * 2000, "text/csv")}
    upload = await http.post("/graphql", files=files, headers={"graphql-preflight": "1"})
    assert upload.status_code == 413 and "the upload is larger than 5000 bytes" in upload.text
    # A JSON body that also says multipart would have passed under the upload limit (review)
    twice = await http.post("/graphql", content=orjson.dumps(big), headers=[
        ("content-type", "application/json"), ("content-type", "multipart/form-data"), ("graphql-preflight", "1")])
    assert twice.status_code == 400 and "one Content-Type header" in twice.text
    small = {"operations": (None, operations), "map": (None, '{"0": ["variables.f"]}'),
             "0": ("prices.csv", b"name;price\na;1\n", "text/csv")}
    assert (await http.post("/graphql", files=small, headers={"graphql-preflight": "1"})).status_code == 200


async def test_websockets_from_other_origins_are_refused(database_url: str, empty_catalog: PostgresBackend) -> None:
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from server import create_app

    app = create_app(make_settings(database_url, cors_origins="https://shop.example"))

    def handshake(client: Any, origin: str | None) -> Any:
        headers = {"origin": origin} if origin else {}
        try:
            with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"], headers=headers) as ws:
                ws.send_json({"type": "connection_init", "payload": {}})
                return ws.receive()["type"]
        except WebSocketDisconnect as exc:
            return exc.code

    def handshakes() -> list[Any]:
        with TestClient(app) as client:
            return [handshake(client, "https://shop.example"), handshake(client, None),
                    handshake(client, "https://evil.example")]

    shop, no_origin, evil = await asyncio.to_thread(handshakes)
    assert shop == no_origin == "websocket.send"
    assert evil == 1008  # refused before the handshake is accepted (HTTP 403)
