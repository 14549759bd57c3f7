"""priceUpdates over graphql-transport-ws between real server processes, with a real client
(gql's websockets transport): live fan-out across instances, resume with `after`, cursors
refused with a reason, protocol close codes, and a consumer too slow to keep up."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import secrets
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
import websockets
from gql.transport.exceptions import TransportQueryError

from backends.imports import import_price_list
from backends.outbox_reader import prune_events
from backends.postgres import PostgresBackend
from resolvers.ids import to_global_id
from resolvers.subscriptions import encode_event_cursor
from tests.catalog_fixtures import insert_category, insert_supplier
from tests.subscription_helpers import (
    ROOT,
    WAIT,
    Instance,
    ProgressSubscription,
    Subscription,
    instances,
    price_csv,
    sse_events,
    upload,
    wait_hub,
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
    async with instances(database_url, tmp_path, 2, WS_INIT_TIMEOUT_S="1", WS_PING_INTERVAL_S="1") as started:
        yield started


@pytest.fixture
async def retention_reset(conn: asyncpg.Connection) -> AsyncIterator[None]:
    yield
    await conn.execute("UPDATE outbox_retention SET pruned_through = 0")


async def price_event_ids(conn: asyncpg.Connection, after: int = 0) -> list[int]:
    return [r["id"] for r in await conn.fetch(
        "SELECT id FROM outbox WHERE topic = 'price.changed' AND id > $1 AND payload->'price' <> 'null' ORDER BY id",
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


async def test_subscribers_of_one_document_share_one_execution_per_event(
    pair: list[Instance], conn: asyncpg.Connection
) -> None:
    subscribed, writer = pair
    supplier = await insert_supplier(conn, "ООО «СтройТорг»")
    async with (Subscription(subscribed.ws, {}) as a, Subscription(subscribed.ws, {}) as b,
                Subscription(subscribed.ws, {}) as c, Subscription(subscribed.ws, {}, "cursor") as other):
        await wait_subscribed(subscribed.http, 4)
        await upload(writer.http, supplier, price_csv(V1))
        received = [await sub.wait_for(3) for sub in (a, b, c, other)]
    assert received[0] == received[1] == received[2]  # the same result, sent to each
    assert sorted(e["price"]["unitPrice"] for e in received[0]) == sorted(price for *_, price in V1)
    assert [e["cursor"] for e in received[3]] == [e["cursor"] for e in received[0]]
    async with httpx.AsyncClient() as http:
        state = (await http.get(subscribed.http.replace("/graphql", "/health/subscriptions"))).json()
    # 3 events x 2 documents executed; the other two subscribers of the first document were
    # handed its results.
    assert state["eventExecutions"] == {"executed": 6, "shared": 6}


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


@pytest.fixture
async def limited(database_url: str, empty_catalog: object, tmp_path: Path) -> AsyncIterator[Instance]:
    async with instances(database_url, tmp_path, 1, SUBSCRIPTION_QUEUE_LIMIT="20", SUBSCRIPTIONS_PER_CLIENT="3",
                         SUBSCRIPTIONS_PER_CONNECTION="2") as started:
        yield started[0]


async def _acknowledged(url: str, **connect: int) -> websockets.ClientConnection:
    ws = await websockets.connect(url, subprotocols=["graphql-transport-ws"], **connect)
    await ws.send(json.dumps({"type": "connection_init"}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    return ws


def _subscribe(op_id: str, fields: str = "cursor") -> str:
    return json.dumps({"type": "subscribe", "id": op_id,
                       "payload": {"query": f"subscription {{ priceUpdates {{ {fields} }} }}"}})


async def _next_message(ws: websockets.ClientConnection, op_id: str) -> dict:
    async with asyncio.timeout(WAIT):
        while True:
            message = json.loads(await ws.recv())
            if message.get("id") == op_id:
                return message


async def test_subscriptions_are_limited_per_connection_and_per_client(limited: Instance) -> None:
    first = await _acknowledged(limited.ws)
    second = await _acknowledged(limited.ws)
    try:
        await first.send(_subscribe("a"))
        await first.send(_subscribe("b"))
        await first.send(_subscribe("c"))  # a third on one connection (SUBSCRIPTIONS_PER_CONNECTION=2)
        refused = await _next_message(first, "c")
        assert refused["type"] == "error" and "limit" in refused["payload"][0]["message"]
        await wait_subscribed(limited.http, 2)
        await second.send(_subscribe("d"))  # the client's third (SUBSCRIPTIONS_PER_CLIENT=3): accepted
        await wait_subscribed(limited.http, 3)
        await second.send(_subscribe("e"))  # its fourth, on another connection: refused
        refused = await _next_message(second, "e")
        assert refused["type"] == "next" and refused["payload"]["data"] is None
        error = refused["payload"]["errors"][0]
        assert "too many subscriptions: client 127.0.0.1 already has 3 running" in error["message"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert (await _next_message(second, "e"))["type"] == "complete"
        # Completing one frees its place.
        await first.send(json.dumps({"type": "complete", "id": "a"}))
        await second.send(_subscribe("f"))
        await wait_subscribed(limited.http, 3)
    finally:
        await first.close()
        await second.close()


async def test_a_key_in_connection_init_has_its_own_allowance_of_subscriptions(
    limited: Instance, conn: asyncpg.Connection
) -> None:
    from tests.keys import make_key

    key = await make_key(conn, ("read",))
    prefix = key.split("_")[1]
    anonymous = await _acknowledged(limited.ws)
    keyed = await websockets.connect(limited.ws, subprotocols=["graphql-transport-ws"])
    try:
        await keyed.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}))
        assert json.loads(await keyed.recv())["type"] == "connection_ack"
        for op in ("a", "b"):
            await anonymous.send(_subscribe(op))
        await wait_subscribed(limited.http, 2)
        for op in ("c", "d"):  # the same address, but counted against the key (SUBSCRIPTIONS_PER_CLIENT=3)
            await keyed.send(_subscribe(op))
        await wait_subscribed(limited.http, 4)
        extra = await websockets.connect(limited.ws, subprotocols=["graphql-transport-ws"])
        try:
            await extra.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}))
            assert json.loads(await extra.recv())["type"] == "connection_ack"
            await extra.send(_subscribe("e"))
            await wait_subscribed(limited.http, 5)  # the key's third
            await extra.send(_subscribe("f"))  # its fourth
            refused = await _next_message(extra, "f")
            error = refused["payload"]["errors"][0]
            assert f"too many subscriptions: client key {prefix} already has 3 running" in error["message"]
        finally:
            await extra.close()
    finally:
        await anonymous.close()
        await keyed.close()


async def test_a_consumer_that_does_not_read_is_closed_with_the_reason_instead_of_queueing(
    limited: Instance, conn: asyncpg.Connection, pg: PostgresBackend
) -> None:
    # Big events (each carries a 64 KB random description, which per-message deflate cannot
    # shrink): the sockets' buffers fill after a few hundred KB, then the server's sends wait,
    # and the subscriber's queue (20 events) fills behind them.
    names = [f"Плита декоративная {i:03d}" for i in range(300)]
    await conn.executemany("INSERT INTO materials (name, unit_code, description) VALUES ($1, 'шт', $2)",
                           [(name, secrets.token_urlsafe(48_000)) for name in names])
    supplier = await insert_supplier(conn, "ООО «Плиты»")
    ws = await _acknowledged(limited.ws, max_queue=1)  # the client stops reading from the socket at once
    try:
        await ws.send(_subscribe("slow", "cursor material { description }"))
        await wait_subscribed(limited.http, 1)
        content = price_csv([(name, "", "шт", f"{100 + i}.00") for i, name in enumerate(names)])
        await import_price_list(pg, supplier, io.BytesIO(content), filename="plates.csv")
        await wait_hub(limited.http, "closedTooSlow", 1)
        # Now read: the events that were already on their way, then the reason, then complete.
        received = 0
        async with asyncio.timeout(WAIT):
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "next" and message["payload"].get("errors"):
                    break
                received += 1
        error = message["payload"]["errors"][0]
        assert re.search(r"fell behind: \d+ events were waiting to be sent \(at most 20 are kept", error["message"])
        assert error["extensions"]["code"] == "SUBSCRIBER_CLOSED"
        assert received < len(names)  # it was closed before everything was sent
        assert json.loads(await ws.recv())["type"] == "complete"
    finally:
        await ws.close()


async def test_import_progress_of_an_import_run_elsewhere_then_done(
    pair: list[Instance], conn: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    subscribed = pair[0]
    await insert_supplier(conn, "ООО «Прогресс»")
    rows = [(f"Блок керамический {i:05d}", "Блоки", "шт", f"{50 + i % 100}.00") for i in range(30_000)]
    path = tmp_path / "progress.csv"
    path.write_bytes(price_csv(rows))
    # Hold the import after it has read every row: it publishes its progress, then waits for
    # this lock to supersede the supplier's older list. Released once a subscriber has seen it.
    blocker = await asyncpg.connect(database_url)
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("LOCK TABLE price_lists IN EXCLUSIVE MODE")
    env = {k: v for k, v in os.environ.items() if k not in {"TEST_DATABASE_URL"}}
    env.update({"DATABASE_URL": database_url, "CACHE": "0"})
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "server.py", "import", str(path), "--supplier", "ООО «Прогресс»", "--quiet",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        assert cli.stdout is not None
        async with asyncio.timeout(WAIT):
            line = (await cli.stdout.readline()).decode()
        price_list = re.search(r'priceListId: "([^"]+)"', line)
        assert price_list, line
        fields = "processedRows totalRows done priceList { id status version rowCount }"
        async with ProgressSubscription(subscribed.ws, price_list.group(1), fields) as sub:
            # Progress until every row was read (the import then waits for the lock; it keeps
            # saying where it is, so this message comes whenever the subscription started).
            while (await sub.wait_for(len(sub.events) + 1))[-1]["processedRows"] < 30_000:
                pass
            running = sub.events[-1]
            assert running == {"processedRows": 30_000, "totalRows": None, "done": False, "priceList": {
                "id": price_list.group(1), "status": "PROCESSING", "version": 1, "rowCount": 30_000}}
            await transaction.commit()  # let the import finish
            events = await sub.wait_for_done()
        assert events[-1] == {"processedRows": 30_000, "totalRows": 30_000, "done": True, "priceList": {
            "id": price_list.group(1), "status": "ACTIVE", "version": 1, "rowCount": 30_000}}
        assert all(not e["done"] for e in events[:-1])
        counts = [e["processedRows"] for e in events]
        assert counts == sorted(counts)
        assert (await cli.wait()) == 0
    finally:
        if cli.returncode is None:
            cli.kill()
            await cli.wait()
        await blocker.close()


async def test_the_server_pings_after_connection_ack_and_answers_pings(pair: list[Instance]) -> None:
    ws = await _acknowledged(pair[0].ws)
    try:
        await ws.send(json.dumps({"type": "ping"}))
        async with asyncio.timeout(WAIT):
            seen = {json.loads(await ws.recv())["type"] for _ in range(2)}  # its pong, and its own ping
        assert seen == {"pong", "ping"}
        await ws.send(json.dumps({"type": "pong"}))
        async with asyncio.timeout(WAIT):
            assert json.loads(await ws.recv())["type"] == "ping"  # and again, WS_PING_INTERVAL_S later
    finally:
        await ws.close()


async def test_price_updates_over_sse_from_a_change_committed_through_the_other_instance(
    pair: list[Instance], conn: asyncpg.Connection
) -> None:
    subscribed, writer = pair
    supplier = await insert_supplier(conn, "ООО «СтройТорг»")
    body = {"query": "subscription { priceUpdates { cursor price { unitPrice } material { name } } }"}
    events: list[dict] = []
    async with httpx.AsyncClient(timeout=WAIT) as http, http.stream(
            "POST", subscribed.http, json=body, headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        await wait_subscribed(subscribed.http, 1)
        await upload(writer.http, supplier, price_csv(V1))
        async with asyncio.timeout(WAIT):
            async for event, data in sse_events(response):
                assert event == "next"
                events.append(json.loads(data)["data"]["priceUpdates"])
                if len(events) == 3:
                    break
    assert sorted((e["material"]["name"], e["price"]["unitPrice"]) for e in events) == sorted(
        (name, price) for name, _, _, price in V1)


async def test_sigterm_ends_the_server_while_an_sse_subscription_is_open(
    database_url: str, empty_catalog: object, tmp_path: Path
) -> None:
    # An SSE subscription never ends by itself: uvicorn would wait for it forever before the
    # shutdown ran (review: still alive 25 s after SIGTERM). GRACEFUL_SHUTDOWN_S bounds the wait.
    import signal

    async with instances(database_url, tmp_path, 1, GRACEFUL_SHUTDOWN_S="1") as (server,):
        body = {"query": "subscription { priceUpdates { cursor } }"}
        async with httpx.AsyncClient(timeout=WAIT) as http, http.stream(
                "POST", server.http, json=body, headers={"Accept": "text/event-stream"}) as response:
            assert response.status_code == 200
            await wait_subscribed(server.http, 1)
            server.proc.send_signal(signal.SIGTERM)
            # a hang guard, not a measured time: the process must end on its own
            code = await asyncio.to_thread(server.proc.wait, 60)
    assert code == 128 + signal.SIGTERM  # ended through SystemExit (server._exit_on_sigterm)


def test_the_slow_subscriber_grace_is_a_setting(database_url: str) -> None:
    from server import Settings, create_app
    from tests.conftest import make_settings

    assert Settings.from_env({"SUBSCRIPTION_SLOW_GRACE_S": "0.5"}).subscription_slow_grace_s == 0.5
    app = create_app(make_settings(database_url, subscription_slow_grace_s=0.3))
    assert app.state.hub.slow_grace == 0.3
