"""Responses compressed as Accept-Encoding allows (zstd, br, gzip); small bodies and streams are not."""

from __future__ import annotations

import gzip

import asyncpg
import brotli
import httpx
import orjson
import pytest
import zstandard
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import StreamingResponse
from starlette.routing import Route

from middleware.compression import CompressMiddleware
from tests.catalog_fixtures import insert_material

PAGE = "{ materials(first: 40) { edges { node { id name description unit { code name } } } } }"
DECODE = {"zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b), "br": brotli.decompress,
          "gzip": gzip.decompress}


async def raw(client: httpx.AsyncClient, encoding: str, query: str) -> tuple[httpx.Headers, bytes]:
    async with client.stream("POST", "/graphql", json={"query": query},
                             headers={"Accept-Encoding": encoding}) as response:
        assert response.status_code == 200
        return response.headers, b"".join([chunk async for chunk in response.aiter_raw()])


@pytest.mark.parametrize("encoding", ["zstd", "br", "gzip"])
async def test_each_encoding_is_negotiated_and_decodes_to_the_same_body(
    client: httpx.AsyncClient, conn: asyncpg.Connection, encoding: str
) -> None:
    for i in range(40):
        await insert_material(conn, f"Материал номер {i} с длинным описанием", "шт")
    _, plain = await raw(client, "identity", PAGE)
    headers, body = await raw(client, f"{encoding}, identity;q=0.5", PAGE)
    assert headers["content-encoding"] == encoding
    assert "accept-encoding" in headers["vary"].lower()
    assert len(body) < len(plain) / 2  # the page is repetitive JSON: it shrinks a lot
    assert orjson.loads(DECODE[encoding](body))["data"] == orjson.loads(plain)["data"]


async def test_the_server_prefers_zstd_then_brotli_then_gzip(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    for i in range(40):
        await insert_material(conn, f"Материал номер {i} с длинным описанием", "шт")
    assert (await raw(client, "gzip, br, zstd", PAGE))[0]["content-encoding"] == "zstd"
    assert (await raw(client, "gzip, br", PAGE))[0]["content-encoding"] == "br"


async def test_small_bodies_are_sent_as_they_are(client: httpx.AsyncClient) -> None:
    headers, body = await raw(client, "gzip, br, zstd", "{ __typename }")
    assert "content-encoding" not in headers
    assert orjson.loads(body)["data"] == {"__typename": "Query"}


async def test_event_streams_are_never_compressed() -> None:
    async def events(_: object) -> StreamingResponse:
        async def chunks():  # type: ignore[no-untyped-def]
            for i in range(5):
                yield f"data: {'x' * 2000} {i}\n\n".encode()

        return StreamingResponse(chunks(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/events", events)], middleware=[Middleware(CompressMiddleware, minimum_size=100)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.get("/events", headers={"Accept-Encoding": "gzip, br, zstd"})
    assert "content-encoding" not in response.headers
    assert response.text.count("data: ") == 5
