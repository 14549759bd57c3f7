"""Response compression: zstd, brotli or gzip as the client's Accept-Encoding allows
(starlette-compress), for bodies of at least `minimum_size` bytes.

Streams are sent as they are: server-sent events and multipart (incremental delivery)
responses must reach the client message by message, and websockets are not HTTP responses.
"""

from __future__ import annotations

from starlette_compress import CompressMiddleware as _Compress
from starlette_compress import remove_compress_type

STREAM_TYPES = ("text/event-stream", "multipart/mixed")


class CompressMiddleware(_Compress):
    """starlette-compress, never for streams."""

    __slots__ = ()

    def __init__(self, app: object, *, minimum_size: int = 1024) -> None:
        for content_type in STREAM_TYPES:
            remove_compress_type(content_type)
        super().__init__(app, minimum_size=minimum_size)  # type: ignore[arg-type]
