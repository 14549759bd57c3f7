"""HTTP hygiene, as pure ASGI middleware: security headers, body and upload size limits.

CORS is Starlette's CORSMiddleware and the websocket Origin check Strawberry's own
(`allowed_origins`, the same CORS_ORIGINS list); both are wired in server.py."""

from __future__ import annotations

from typing import Any

import orjson

from middleware.auth import count_refusal

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
# GraphiQL's page loads its own scripts and styles from /graphiql-assets, and inline ones.
CONTENT_SECURITY_POLICY = (b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                           b"img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
                           b"connect-src 'self' ws: wss:; frame-ancestors 'none'")


class SecurityHeaders:
    """Adds the security headers to every HTTP response (the ones the app set itself are kept)."""

    def __init__(self, app: Any, *, hsts: bool = False) -> None:
        self.app = app
        self.headers = [*SECURITY_HEADERS, (b"content-security-policy", CONTENT_SECURITY_POLICY)]
        if hsts:
            self.headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                message = dict(message, headers=[*message.get("headers", []), *extra])
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuses request bodies above `max_body` bytes (`max_upload` for multipart uploads) with a
    413 that says the limit; counts streamed bytes too, so a missing Content-Length does not help."""

    def __init__(self, app: Any, *, max_body: int, max_upload: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        multipart = False
        declared = None
        content_types = 0
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_types += 1
                multipart = value.lower().startswith(b"multipart/")
            elif name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        if content_types > 1:
            # Layers would disagree on what the body is (one reading the first header, another
            # any of them: a JSON body could pass under the upload limit).
            await _bad_request(send, "a request may carry one Content-Type header")
            return
        limit, what = (self.max_upload, "upload") if multipart else (self.max_body, "request body")
        if declared is not None and declared > limit:
            await _too_large(send, what, limit, declared)
            return
        received = 0
        started = False

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracked(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                await _too_large(send, what, limit, None)


async def _bad_request(send: Any, message: str) -> None:
    count_refusal("bad_request")
    body = orjson.dumps({"errors": [{"message": message, "extensions": {"code": "VALIDATION"}}]})
    await send({"type": "http.response.start", "status": 400, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _too_large(send: Any, what: str, limit: int, size: int | None) -> None:
    count_refusal("body_too_large")
    got = f" (got {size} bytes)" if size is not None else ""
    body = orjson.dumps({"errors": [{"message": f"the {what} is larger than {limit} bytes{got}",
                                     "extensions": {"code": "PAYLOAD_TOO_LARGE", "limit": limit}}]})
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
