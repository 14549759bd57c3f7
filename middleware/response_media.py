"""GraphQL over HTTP's `application/graphql-response+json`, for clients that ask for it.

A client whose Accept header names `application/graphql-response+json` gets that media
type, and a request error (the document does not parse or validate, variables do not
coerce, a limit refused it: `data` is null and no error has a `path`, so nothing executed)
is a 400 without a `data` entry, as the GraphQL-over-HTTP specification has it. Clients that
accept only `application/json` keep getting 200 with `data: null` (the legacy behaviour
the specification keeps for them). Pure ASGI; other paths, websockets and streamed
responses (SSE, multipart) pass through untouched.
"""

from __future__ import annotations

from typing import Any

import orjson

MEDIA_TYPE = b"application/graphql-response+json"


def wants_graphql_response(scope: Any) -> bool:
    for name, value in scope["headers"]:
        if name == b"accept":
            return MEDIA_TYPE in value.lower()
    return False


class GraphQLResponseMedia:
    def __init__(self, app: Any, *, path: str = "/graphql") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or not wants_graphql_response(scope):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] | None = None
        chunks: list[bytes] = []
        passing = False

        async def capture(message: Any) -> None:
            nonlocal start, passing
            if message["type"] == "http.response.start":
                content_type = next((v for k, v in message.get("headers", []) if k.lower() == b"content-type"), b"")
                if not content_type.startswith(b"application/json"):
                    passing = True  # HTML, an SSE or multipart stream, a 304: not ours to change
                    await send(message)
                    return
                start = message
                return
            if passing or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send(start, b"".join(chunks), send)

        await self.app(scope, receive, capture)

    @staticmethod
    async def _send(start: dict[str, Any], body: bytes, send: Any) -> None:
        status = start["status"]
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        if status == 200 and isinstance(payload, dict) and payload.get("data", 0) is None and payload.get("errors") \
                and not any(isinstance(e, dict) and e.get("path") for e in payload["errors"]):
            status = 400
            payload.pop("data")
            body = orjson.dumps(payload)
        headers = [(k, v) for k, v in start.get("headers", [])
                   if k.lower() not in (b"content-type", b"content-length")]
        headers += [(b"content-type", MEDIA_TYPE + b"; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
