"""Reading a request body in pure ASGI middleware, and handing it on to the app behind."""

from __future__ import annotations

from typing import Any


def is_json(scope: Any) -> bool:
    """Whether the request says its body is `application/json` (parameters such as charset aside)."""
    for key, value in scope["headers"]:
        if key == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/json"
    return False


async def read_body(receive: Any) -> bytes:
    """The whole body (every `http.request` message until `more_body` is false)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Any) -> Any:
    """A `receive` that hands `body` (read before, perhaps rewritten) over once, then defers to the real one."""
    sent = False

    async def replayed() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
