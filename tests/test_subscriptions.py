"""priceUpdates over graphql-transport-ws between real server processes, with a real client
(gql's websockets transport): live fan-out across instances, resume with `after`, cursors
refused with a reason, protocol close codes, and a consumer too slow to keep up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import websockets
from gql.transport.exceptions import TransportQueryError

from backends.outbox_reader import prune_events
from resolvers.ids import to_global_id
from resolvers.subscriptions import encode_event_cursor
from tests.catalog_fixtures import insert_category, insert_supplier
from tests.subscription_helpers import (
    WAIT,
    Instance,
    Subscription,
    instances,
    price_csv,
    upload,
    wait_subscribed,
)

V1 = [("Цемент М500", "Цемент", "мешок", "520.00"), ("Песок речной", "Песок", "м³", "1000.00"),
      ("Щебень гранитный", "Щебень", "т", "1800.00")]
V2 = [("Цемент М500", "Цемент", "мешок", "540.00"), ("Песок речной", "Песок", "м³", "1000.00"),
      ("Щебень гранитный", "Щебень", "т", "1750.00")]
V3 = [("Цемент М500", "Цемент", "мешок", "555.00"), ("Песок речной", "Песок", "м³", "990.00"),
      ("Щебень гранитный", "Щебень", "т", "1750.00")]


@pytest.fixture
async def pair(database_url: str, empty_catalog: object, tmp_path: Path) -> AsyncIterator[list[Instance]]:
    async with instances(database_url, tmp_path, 2, WS_INIT_TIMEOUT_S="1") as started:
        yield started


@pytest.fixture
async def retention_reset(conn: asyncpg.Connection) -> AsyncIterator[None]:
    yield
    await conn.execute("UPDATE outbox_retention SET pruned_through = 0")


async def price_event_ids(conn: asyncpg.Connection, after: int = 0) -> list[int]:
    return [r["id"] for r in await conn.fetch(
        "SELECT id FROM events WHERE topic = 'price.changed' AND id > $1 AND payload->'price' <> 'null' ORDER BY id",
        after)]


def event_id(cursor: str) -> int:
    import base64

    return int(base64.urlsafe_b64decode(cursor).decode().split(":")[1])


async def test_price_changes_committed_through_one_instance_reach_a_subscriber_on_the_other(
    pair: list[Instance], conn: asyncpg.Connection
) -> None:
    subscribed, writer = pair
    supplier = await insert_supplier(conn, "ООО «СтройТорг»")
    async with Subscription(subscribed.ws, {}) as sub:
        await wait_subscribed(subscribed.http, 1)
        await upload(writer.http, supplier, price_csv(V1))
        events = await sub.wait_for(3)
    assert sorted((e["material"]["name"], e["price"]["unitPrice"]) for e in events) == sorted(
        (name, price) for name, _, _, price in V1)
    assert all(e["previousUnitPrice"] is None for e in events)  # new prices: nothing before
    assert all(e["price"]["supplier"]["id"] == to_global_id("Supplier", supplier) for e in events)
    assert [event_id(e["cursor"]) for e in events] == await price_event_ids(conn)


async def test_a_subscriber_that_reconnects_with_after_receives_exactly_the_missed_events_then_live_ones(
    pair: list[Instance], conn: asyncpg.Connection
) -> None:
    subscribed, writer = pair
    supplier = await insert_supplier(conn, "ООО «СтройТорг»")
    async with Subscription(subscribed.ws, {}) as sub:
        await wait_subscribed(subscribed.http, 1)
        await upload(writer.http, supplier, price_csv(V1))
        first = await sub.wait_for(3)
    last_cursor = first[-1]["cursor"]
    await upload(writer.http, supplier, price_csv(V2), "v2.csv")  # while nobody listens: 2 prices change
    missed = await price_event_ids(conn, event_id(last_cursor))
    assert len(missed) == 2

    async with Subscription(subscribed.ws, {"after": last_cursor}) as sub:
        replayed = list(await sub.wait_for(2))
        await wait_subscribed(subscribed.http, 1)
        await upload(writer.http, supplier, price_csv(V3), "v3.csv")  # live after the replay: 2 more
        events = await sub.wait_for(4)
    ids = [event_id(e["cursor"]) for e in events]
    assert ids[:2] == missed
    assert ids == await price_event_ids(conn, event_id(last_cursor))  # all of them, in order, none twice
    assert [(e["material"]["name"], e["previousUnitPrice"], e["price"]["unitPrice"]) for e in replayed] == [
        ("Цемент М500", "520.00", "540.00"), ("Щебень гранитный", "1800.00", "1750.00")]


async def test_filters_by_material_category_with_subcategories_and_supplier(
    pair: list[Instance], conn: asyncpg.Connection
) -> None:
    subscribed, writer = pair
    building = await insert_category(conn, "Стройматериалы")
    await insert_category(conn, "Цемент", building)  # the file's "Цемент" is a subcategory
    first = await insert_supplier(conn, "ООО «Первый»")
    second = await insert_supplier(conn, "ООО «Второй»")
    await upload(writer.http, first, price_csv(V1))
    cement, sand = [await conn.fetchval("SELECT id FROM materials WHERE name = $1", n)
                    for n in ("Цемент М500", "Песок речной")]
    filters = {
        "category": {"categoryId": to_global_id("Category", building)},
        "supplier": {"supplierId": to_global_id("Supplier", second)},
        "materials": {"materialIds": [to_global_id("Material", sand)]},
    }
    subs = {name: Subscription(subscribed.ws, variables) for name, variables in filters.items()}
    for sub in subs.values():
        await sub.__aenter__()
    try:
        await wait_subscribed(subscribed.http, len(subs))
        await upload(writer.http, first, price_csv(V3), "v3.csv")  # all three change at the first supplier
        await upload(writer.http, second, price_csv(V1), "v1-second.csv")  # all three, new at the second
        await upload(writer.http, second, price_csv(V3), "v3-second.csv")  # all three change at the second
        # Events arrive in commit order and the last import's events are accepted by every filter:
        # an event a filter should have dropped would show up before them, so the lists are exact.
        category = await subs["category"].wait_for(3)
        supplier = await subs["supplier"].wait_for(6)
        materials = await subs["materials"].wait_for(3)
    finally:
        for sub in subs.values():
            await sub.__aexit__(None, None, None)
    cement_id, sand_id = to_global_id("Material", cement), to_global_id("Material", sand)
    assert [e["material"]["id"] for e in category] == [cement_id] * 3
    assert [e["price"]["unitPrice"] for e in category] == ["555.00", "520.00", "555.00"]
    assert [e["price"]["supplier"]["id"] for e in supplier] == [to_global_id("Supplier", second)] * 6
    assert [e["material"]["id"] for e in materials] == [sand_id] * 3
    assert [e["price"]["unitPrice"] for e in materials] == ["990.00", "1000.00", "990.00"]


async def test_a_bad_or_expired_cursor_gets_an_error_that_says_to_refetch(
    pair: list[Instance], conn: asyncpg.Connection, retention_reset: None
) -> None:
    subscribed, writer = pair
    supplier = await insert_supplier(conn, "ООО «СтройТорг»")
    await upload(writer.http, supplier, price_csv(V1))
    first_id = (await price_event_ids(conn))[0]

    async with Subscription(subscribed.ws, {"after": "not-a-cursor"}) as sub:
        error = await sub.wait_error()
    assert isinstance(error, TransportQueryError)
    assert "is not a cursor of priceUpdates" in str(error)

    # Everything in the outbox is older than a zero retention: pruned.
    assert await prune_events(conn, timedelta(0)) > 0
    async with Subscription(subscribed.ws, {"after": encode_event_cursor(first_id)}) as sub:
        error = await sub.wait_error()
    assert isinstance(error, TransportQueryError)
    assert "were removed" in str(error) and "refetch" in str(error)
    assert error.errors[0]["extensions"]["code"] == "CURSOR_EXPIRED"


async def _closed_with(url: str, *messages: str, wait_first: bool = False) -> tuple[int, str]:
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:
        for message in messages:
            await ws.send(message)
        try:
            async with asyncio.timeout(WAIT):
                async for _ in ws:
                    pass
        except websockets.ConnectionClosed:
            pass
        assert ws.close_code is not None
        return ws.close_code, ws.close_reason or ""


async def test_protocol_errors_close_the_socket_with_the_protocols_codes(pair: list[Instance]) -> None:
    url = pair[0].ws
    init = json.dumps({"type": "connection_init"})
    assert (await _closed_with(url, "this is not json"))[0] == 4400
    code, reason = await _closed_with(url, init, init)
    assert (code, reason) == (4429, "Too many initialisation requests")
    subscribe = json.dumps({"type": "subscribe", "id": "1", "payload": {"query": "subscription { priceUpdates { cursor } }"}})
    assert (await _closed_with(url, subscribe))[0] == 4401  # subscribe before connection_ack
    code, reason = await _closed_with(url)  # no connection_init within WS_INIT_TIMEOUT_S
    assert (code, reason) == (4408, "Connection initialisation timeout")
