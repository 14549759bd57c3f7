"""The events of imports are typed rows (price_change_events, material_created_events:
migrations/0011, 0013) beside `events`: one id sequence, read together through the view
`outbox` by every consumer."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from backends.freshness import Freshness
from backends.imports import import_price_list
from backends.outbox import record_events
from backends.outbox_reader import CursorExpired, check_cursor, events_after, latest_event_id, prune_events
from backends.postgres import PostgresBackend
from backends.price_events import PriceEventFilter, previous_unit_price, price_row

HEADER = "name,sku,use_category,unit_price,unit_price_currency,calc_unit,count,date_price_change\n"


@pytest.fixture
async def retention_reset(conn: asyncpg.Connection) -> AsyncIterator[None]:
    yield
    await conn.execute("UPDATE outbox_retention SET pruned_through = 0")


async def _import(pg: PostgresBackend, supplier: int, text: str, name: str) -> int:
    result = await import_price_list(pg, supplier, io.BytesIO((HEADER + text).encode()), filename=name)
    return result.price_list_id


async def test_consumers_read_price_changes_and_other_events_in_one_id_order(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection
) -> None:
    supplier = await conn.fetchval("INSERT INTO suppliers (name) VALUES ('ООО «Типы»') RETURNING id")
    await _import(empty_catalog, supplier, "Цемент М500,CEM-1,Цемент,520,RUB,мешок,10,15.11.2026\n", "v1.csv")
    await record_events(conn, [("material.updated", 1, {"materialId": 1})])  # a mutation between imports
    second = await _import(empty_catalog, supplier, "Цемент М500,CEM-1,Цемент,540,RUB,мешок,10,16.11.2026\n", "v2.csv")

    assert await conn.fetchval("SELECT count(*) FROM price_change_events") == 2
    assert await conn.fetchval("SELECT count(*) FROM material_created_events") == 1
    assert await conn.fetchval("SELECT count(*) FROM events WHERE topic IN ('price.changed', 'material.created')") == 0
    events = await events_after(conn, 0, 100)
    assert [e.topic for e in events] == ["material.created", "price.changed", "price_list.imported",
                                         "material.updated", "price.changed", "price_list.imported"]
    assert [e.id for e in events] == sorted({e.id for e in events})  # one sequence, no id twice
    paged, position = [], 0  # batches smaller than a table's share: each table limited, then merged
    while batch := await events_after(conn, position, 2):
        paged += batch
        position = batch[-1].id
    assert paged == events
    assert await latest_event_id(conn) == events[-1].id

    change = events[4]
    cement = await conn.fetchval("SELECT id FROM materials WHERE sku = 'CEM-1'")
    assert change.entity_id == cement and change.payload["priceListId"] == second
    assert previous_unit_price(change) == 520 and price_row(change)["unit_price"] == 540
    assert PriceEventFilter(supplier_id=supplier, material_ids=frozenset({cement})).accepts(change)
    assert events[0].entity_id == cement and events[0].payload == {
        "materialId": cement, "sku": "CEM-1", "name": "Цемент М500", "unit": "мешок", "source": "import"}
    # A topic filter (subscription replay) reads the typed rows alone.
    assert [e.id for e in await events_after(conn, 0, 100, topics=["price.changed"])] == [events[1].id, change.id]
    assert [e.id for e in await events_after(conn, events[1].id, 1, topics=["price.changed"])] == [change.id]


async def test_pruning_removes_typed_events_with_the_other_events(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection, retention_reset: None
) -> None:
    supplier = await conn.fetchval("INSERT INTO suppliers (name) VALUES ('ООО «Типы»') RETURNING id")
    await _import(empty_catalog, supplier, "Песок речной,,Песок,300,RUB,м3,,\nЩебень,,Щебень,900,RUB,т,,\n", "v1.csv")
    events = await events_after(conn, 0, 100)
    changes = [e.id for e in events if e.topic == "price.changed"]
    assert len(changes) == 2
    for table in ("events", "material_created_events"):
        await conn.execute(f"UPDATE {table} SET created_at = now() - interval '2 hours'")
    await conn.execute("UPDATE price_change_events SET created_at = now() - interval '2 hours' WHERE id = $1",
                       changes[0])
    # The prefix of old events ends before the second price change (still within retention).
    assert await prune_events(conn, timedelta(hours=1)) == len([e for e in events if e.id < changes[1]])
    assert [e.id for e in await events_after(conn, 0, 100)] == [e.id for e in events if e.id >= changes[1]]
    await check_cursor(conn, changes[1] - 1)
    with pytest.raises(CursorExpired, match="were removed"):
        await check_cursor(conn, changes[0] - 1)
    assert await prune_events(conn, timedelta(0)) == len([e for e in events if e.id >= changes[1]])
    assert await conn.fetchval("SELECT count(*) FROM outbox") == 0


async def test_the_cache_is_invalidated_by_typed_price_changes(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection, redis_prefix: str
) -> None:
    supplier = await conn.fetchval("INSERT INTO suppliers (name) VALUES ('ООО «Типы»') RETURNING id")
    freshness = Freshness(empty_catalog, None, key_prefix=redis_prefix)
    before = await freshness.observe()
    lst = await _import(empty_catalog, supplier, "Цемент М500,CEM-1,Цемент,520,RUB,мешок,10,15.11.2026\n", "v1.csv")
    gen = await freshness.observe()
    change = await conn.fetchval("SELECT id FROM price_change_events")
    cement = await conn.fetchval("SELECT id FROM materials WHERE sku = 'CEM-1'")
    assert before < change < gen == await latest_event_id(conn)
    assert freshness.touched[f"price_list:{lst}"] == gen  # the list's own event, last
    assert freshness.touched[f"material:{cement}"] == change
    assert freshness.touched["list:categories"] == gen  # set by the import's material.created too
    assert not freshness.valid(before, [f"material:{cement}"])
    assert freshness.valid(gen, [f"material:{cement}", f"supplier:{supplier}"])
