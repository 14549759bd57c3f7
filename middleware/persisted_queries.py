"""Automatic Persisted Queries over GET and POST, and CDN headers for public GETs.

A request with `extensions.persistedQuery = {"version": 1, "sha256Hash": H}` and no query
is answered from the store (PERSISTED_QUERY_NOT_FOUND when H is unknown: the client then
sends H with the query, which is checked against H and stored). The request is then
rewritten into an ordinary one (a JSON body, or `?query=&variables=&operationName=`), so
the lean path, its response cache and the guard treat it like any other. A GET of a
persisted query by an anonymous caller that succeeds carries `Cache-Control: public` and an
ETag of its data; `If-None-Match` with that ETag gets a 304.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from graphql import GraphQLError, parse

from backends.persisted_queries import HASH, PersistedQueryStore, sha256_hex
from middleware.asgi_body import is_json, read_body, replay
from middleware.auth import PRINCIPAL


class PersistedQueryError(Exception):
    def __init__(self, code: str, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class PersistedQueries:
    """Pure ASGI, in front of the GraphQL view on `path`."""

    def __init__(self, app: Any, store: PersistedQueryStore, *, path: str = "/graphql", allowlist: bool = False,
                 max_age: int = 300, max_chars: int = 20_000, max_tokens: int = 1000) -> None:
        self.app = app
        self.store = store
        self.path = path
        self.allowlist = allowlist
        self.max_age = max_age
        self.max_chars, self.max_tokens = max_chars, max_tokens  # what is worth storing (the guard's limits)

    def _storable(self, query: str) -> bool:
        """Only a text the guard could accept is stored (review: a 600 KB text refused by the
        character limit was kept in Redis for a week, so a flood could evict rate counters)."""
        if len(query) > self.max_chars:
            return False
        try:
            parse(query, max_tokens=self.max_tokens)
        except GraphQLError:
            return False
        return True

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET" and b"persistedQuery" in scope.get("query_string", b""):
            await self._get(scope, receive, send)
            return
        if scope["method"] == "POST" and is_json(scope):
            body = await read_body(receive)
            try:
                body = await self._post_body(body)
            except PersistedQueryError as exc:
                await _error(send, exc)
                return
            await self.app(scope, replay(body, receive), send)
            return
        await self.app(scope, receive, send)

    async def _resolve(self, extensions: Any, query: Any) -> str | None:
        """The query text of a persisted-query request; None when it is not one."""
        if not isinstance(extensions, dict) or "persistedQuery" not in extensions:
            return None
        persisted = extensions["persistedQuery"]
        if not isinstance(persisted, dict) or persisted.get("version") != 1:
            raise PersistedQueryError("PERSISTED_QUERY_NOT_SUPPORTED",
                                      "extensions.persistedQuery must be {\"version\": 1, \"sha256Hash\": ...}", 400)
        digest = persisted.get("sha256Hash")
        if not isinstance(digest, str) or HASH.match(digest) is None:
            raise PersistedQueryError("BAD_REQUEST", "extensions.persistedQuery.sha256Hash must be 64 lowercase hex "
                                      "digits (the SHA-256 of the query text)", 400)
        if isinstance(query, str):
            if sha256_hex(query) != digest:
                raise PersistedQueryError("PERSISTED_QUERY_HASH_MISMATCH",
                                          "provided sha256Hash does not match the query text", 400)
            if not self.allowlist and self._storable(query):  # in allow-list mode only an admin registers queries
                await self.store.put(digest, query)
            return query
        stored = await self.store.get(digest)
        if stored is None:
            raise PersistedQueryError("PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound")
        return stored

    async def _post_body(self, body: bytes) -> bytes:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        if not isinstance(request, dict):
            return body
        if request.get("extensions") is not None and not isinstance(request["extensions"], dict):
            raise PersistedQueryError("BAD_REQUEST", "extensions must be a JSON object", 400)
        query = await self._resolve(request.get("extensions"), request.get("query"))
        if query is None:
            return body
        request["query"] = query
        request.pop("extensions", None)
        return orjson.dumps(request)

    async def _get(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            pairs = parse_qsl(scope["query_string"].decode(), keep_blank_values=True)
        except UnicodeDecodeError:
            await self.app(scope, receive, send)
            return
        params = dict(pairs)
        try:
            extensions = orjson.loads(params.get("extensions", "null"))
        except orjson.JSONDecodeError:
            await _error(send, PersistedQueryError("BAD_REQUEST", "the extensions parameter is not JSON", 400))
            return
        try:
            query = await self._resolve(extensions, params.get("query"))
        except PersistedQueryError as exc:
            await _error(send, exc)
            return
        if query is None:
            await self.app(scope, receive, send)
            return
        params.pop("extensions", None)
        params["query"] = query
        rewritten = dict(scope, query_string=urlencode(params).encode())
        principal = scope.get(PRINCIPAL)
        if principal is None or not principal.anonymous:
            await self.app(rewritten, receive, send)
            return
        await self._cacheable(rewritten, receive, send)

    async def _cacheable(self, scope: Any, receive: Any, send: Any) -> None:
        """Runs the request, then adds Cache-Control and an ETag of its data (or answers 304)."""
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        etag = None
        if start.get("status") == 200:
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                payload = None
            if isinstance(payload, dict) and not payload.get("errors") and "data" in payload:
                etag = '"' + hashlib.blake2b(orjson.dumps(payload["data"]), digest_size=16).hexdigest() + '"'
        if etag is None:
            await send({"type": "http.response.start", "status": start.get("status", 500),
                        "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        headers += [(b"cache-control", f"public, max-age={self.max_age}".encode()), (b"etag", etag.encode()),
                    (b"vary", b"Authorization")]
        if etag in _if_none_match(scope):
            kept = [(k, v) for k, v in headers if k.lower() not in (b"content-type",)]
            await send({"type": "http.response.start", "status": 304, "headers": kept})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _if_none_match(scope: Any) -> set[str]:
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            return {tag.strip().removeprefix("W/") for tag in value.decode("latin-1").split(",")}
    return set()


async def _error(send: Any, exc: PersistedQueryError) -> None:
    body = orjson.dumps({"errors": [{"message": str(exc), "extensions": {"code": exc.code}}]})
    await send({"type": "http.response.start", "status": exc.status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
