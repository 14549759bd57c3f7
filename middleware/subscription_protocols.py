"""Subscription transports of the GraphQL view: graphql-transport-ws with server pings, and SSE.

Strawberry implements both protocols; this module sets their limits and adds what its
graphql-transport-ws handler leaves out: the server pings every `ping_interval` seconds
after the connection is acknowledged (clients answer with pong; a connection that is gone
shows up as a failed send, and uvicorn's websocket pings close it at the TCP level).

Close codes are the protocol's: 4400 bad message, 4401 subscribe before connection_ack,
4408 connection_init timeout, 4409 duplicate operation id, 4429 a second connection_init.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from starlette.websockets import WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions import GRAPHQL_SSE_PROTOCOL, GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler


class TextWebSocketAdapter(ASGIWebSocketAdapter):
    """Sends every message as a text frame: the view encodes JSON to bytes (orjson), which
    Strawberry would send as binary frames, and graphql-ws clients refuse binary frames."""

    async def send_json(self, message: Any) -> None:
        encoded = self.view.encode_json(message)
        try:
            await self.ws.send_text(encoded.decode() if isinstance(encoded, bytes) else encoded)
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


class PingingTransportWSHandler(BaseGraphQLTransportWSHandler[Any, Any]):
    """Strawberry's graphql-transport-ws handler, plus a ping from the server every `ping_interval` s."""

    ping_interval: float = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pinger: asyncio.Task[None] | None = None

    async def handle_connection_init(self, message: Any) -> None:
        await super().handle_connection_init(message)
        if self.connection_acknowledged and self._pinger is None and self.ping_interval > 0:
            self._pinger = asyncio.create_task(self._ping())

    async def _ping(self) -> None:
        with contextlib.suppress(Exception):  # the socket went away: shutdown() follows
            while True:
                await asyncio.sleep(self.ping_interval)
                await self.send_message({"type": "ping"})

    async def shutdown(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
        await super().shutdown()


def configure_subscriptions(view: Any, *, init_timeout_s: float, ping_interval_s: float,
                            per_connection: int) -> None:
    """Sets the transports and limits of a Strawberry view (instance attributes it reads per connection)."""
    if init_timeout_s <= 0 or per_connection < 1 or ping_interval_s < 0:
        raise ValueError("init_timeout_s must be > 0, per_connection >= 1, ping_interval_s >= 0")
    view.websocket_adapter_class = TextWebSocketAdapter
    # Not the legacy graphql-ws (subscriptions-transport-ws) protocol: Strawberry's handler for it
    # ignores the connection_init timeout, so idle unauthenticated sockets could pile up (review).
    view.protocols = (GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_SSE_PROTOCOL)
    view.connection_init_wait_timeout = timedelta(seconds=init_timeout_s)
    view.max_subscriptions_per_connection = per_connection
    view.graphql_transport_ws_handler_class = type(
        "ConfiguredTransportWSHandler", (PingingTransportWSHandler,), {"ping_interval": ping_interval_s})
