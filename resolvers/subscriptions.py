"""Subscription resolvers: price updates (replay, then live from the event hub) and the export.

priceUpdates resumes without a gap or a duplicate at the seam: it subscribes to the hub
first (the hub then queues every accepted event after its position P), replays the outbox
from the client's cursor up to P, and drops any live event at or below the last one
replayed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from backends.catalog import MaterialFilterSpec, MaterialReadPlan
from backends.catalog_export import export_batch_query
from backends.event_hub import EventHub, SubscriberClosed
from backends.outbox_reader import CursorExpired, OutboxEvent, check_cursor, events_after
from backends.postgres import PostgresBackend
from backends.price_events import PRICE_CHANGED, PriceEventFilter
from resolvers.context import Context
from resolvers.errors import InvalidArgument
from resolvers.ids import decode_id

CURSOR_PREFIX = "event:"
REPLAY_BATCH = 500


class SubscriptionError(InvalidArgument):
    """A subscription refused or ended for a reason the client can act on (code in extensions)."""

    def __init__(self, message: str, code: str, field: list[str] | None = None) -> None:
        super().__init__(field or [], message, code)
        if not field:
            self.message = message  # no "field: " prefix when no argument is at fault


def client_address(request: Any) -> str:
    """A connection's client address (who a caller is when nothing else says)."""
    client = getattr(request, "client", None)
    return client.host if client is not None else "unknown"


def caller(ctx: Any) -> str:
    """Who a subscription counts against: the API key the request or the websocket's
    connection_init presented (its rate-limit identity), else the client's address."""
    principal = getattr(ctx, "principal", None)
    if principal is not None and not principal.anonymous:
        return f"key {principal.actor}"
    return client_address(ctx.request)


@dataclass
class Subscriptions:
    """What subscription resolvers share in a process: the hub, limits, who a client is."""

    hub: EventHub
    pg: PostgresBackend
    max_per_client: int = 20
    max_export_batch: int = 5000
    principal: Callable[[Any], str] = caller  # context -> who
    active: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @contextlib.contextmanager
    def slot(self, ctx: Any) -> Iterator[str]:
        """Counts one running subscription of the context's caller, refusing one past the limit."""
        who = self.principal(ctx)
        if self.active[who] >= self.max_per_client:
            raise SubscriptionError(
                f"too many subscriptions: client {who} already has {self.active[who]} running "
                f"(at most {self.max_per_client} per client); complete one first", "RATE_LIMITED")
        self.active[who] += 1
        try:
            yield who
        finally:
            self.active[who] -= 1
            if not self.active[who]:
                del self.active[who]


def encode_event_cursor(event_id: int) -> str:
    return base64.urlsafe_b64encode(f"{CURSOR_PREFIX}{event_id}".encode()).decode("ascii")


def decode_event_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raw = ""
    if not raw.startswith(CURSOR_PREFIX) or not raw[len(CURSOR_PREFIX):].isdigit():
        raise InvalidArgument(["after"], f'"{cursor}" is not a cursor of priceUpdates (pass the `cursor` '
                                         "of the last event received)")
    return int(raw[len(CURSOR_PREFIX):])


def price_filter(material_ids: list[str] | None, category_id: str | None, supplier_id: str | None) -> PriceEventFilter:
    return PriceEventFilter(
        material_ids=(frozenset(decode_id(m, "Material", ["materialIds", str(i)]) for i, m in enumerate(material_ids))
                      if material_ids is not None else None),
        category_id=decode_id(category_id, "Category", ["categoryId"]) if category_id else None,
        supplier_id=decode_id(supplier_id, "Supplier", ["supplierId"]) if supplier_id else None,
    )


def _service(ctx: Context) -> Subscriptions:
    if ctx.subscriptions is None:
        raise SubscriptionError("subscriptions are not available on this server", "UNAVAILABLE")
    return ctx.subscriptions


async def price_updates(ctx: Context, flt: PriceEventFilter, after: str | None) -> AsyncIterator[OutboxEvent]:
    """The accepted price events after `after` (or from now), replayed then live, in id order."""
    service = _service(ctx)
    after_id = decode_event_cursor(after) if after is not None else None
    with service.slot(ctx):
        subscriber = service.hub.subscribe(flt.accepts)
        try:
            last = subscriber.since
            if after_id is not None:
                last = after_id
                async for event in _replay(service.pg, flt, after_id, subscriber.since):
                    last = event.id
                    yield event
            while True:
                try:
                    event = await subscriber.get()
                except SubscriberClosed as closed:
                    raise SubscriptionError(str(closed), "SUBSCRIBER_CLOSED") from None
                if event.id > last:
                    last = event.id
                    yield event
        finally:
            subscriber.close("unsubscribed")


async def _replay(pg: PostgresBackend, flt: PriceEventFilter, after: int, through: int) -> AsyncIterator[OutboxEvent]:
    async with pg.pool.acquire() as conn:
        try:
            await check_cursor(conn, after)
        except CursorExpired as exc:
            raise SubscriptionError(f"{exc}; refetch the current prices, then subscribe without `after`",
                                    "CURSOR_EXPIRED", ["after"]) from None
    position = after
    while position < through:
        # A pooled connection per batch, not one held for the whole replay of a slow client.
        async with pg.pool.acquire() as conn:
            events = await events_after(conn, position, REPLAY_BATCH, through=through, topics=(PRICE_CHANGED,))
        for event in events:
            if flt.accepts(event):
                yield event
        if len(events) < REPLAY_BATCH:
            return
        position = events[-1].id


def batch_size(ctx: Context, size: int | None) -> int:
    cap = _service(ctx).max_export_batch
    if size is None:
        return 1000
    if not 1 <= size <= cap:
        raise InvalidArgument(["batchSize"], f"must be between 1 and {cap} (got {size})")
    return size


async def export_batches(ctx: Context, spec: MaterialFilterSpec, size: int,
                         plan: MaterialReadPlan) -> AsyncIterator[list[asyncpg.Record]]:
    """The filtered catalog in id order, `size` rows a statement (keyset on the primary key).

    Each batch is read when the previous one has been handed on, so a slow client slows the
    reads and a client that leaves (the generator is closed) stops them; no connection is
    held between batches."""
    service = _service(ctx)
    with service.slot(ctx):
        sql, args = export_batch_query(spec, size, plan)
        last = 0
        while True:
            rows = await service.pg.fetch(sql, *args, last)
            yield rows
            if len(rows) < size:
                return
            last = rows[-1]["id"]


UNKNOWN_IMPORT_S = 15.0  # no price list and no progress message for this long: no such import


async def import_progress(ctx: Context, price_list_id: int) -> AsyncIterator[tuple[dict[str, Any] | None,
                                                                                 asyncpg.Record | None]]:
    """(progress message, None) while the import of the list runs, then (None, the committed
    list's row) once; raises when the import failed or nothing is known of the list."""
    service = _service(ctx)
    with service.slot(ctx):
        watcher = service.hub.watch_import(price_list_id)  # first, so no message falls between
        try:
            quiet_since = None
            while True:
                [row] = await ctx.prices.price_lists_by_ids([price_list_id]) or [None]
                if row is not None:
                    yield None, row
                    return
                try:
                    async with asyncio.timeout(2.0):  # a missed "done" is found in the table
                        state = await watcher.next()
                except TimeoutError:
                    now = asyncio.get_running_loop().time()
                    quiet_since = quiet_since or now
                    if now - quiet_since >= UNKNOWN_IMPORT_S:
                        raise SubscriptionError(
                            f"no price list {price_list_id}, and no import of it is running", "NOT_FOUND",
                            ["priceListId"]) from None
                    continue
                quiet_since = None
                if state.get("failed"):
                    raise SubscriptionError(f"the import of price list {price_list_id} failed: {state['failed']} "
                                            "(nothing was stored)", "IMPORT_FAILED")
                if not state.get("done"):
                    yield state, None
        finally:
            watcher.close()
