"""Price-list imports on a real PostgreSQL: versions, matching, rejects, atomicity, outbox."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from backends import imports
from backends.errors import BackendUnavailable
from backends.imports import SupplierNotFound, import_price_list
from backends.postgres import PostgresBackend
from backends.pricefile import PriceFileError
from tests.backends.test_pricefile import tricky_csv
from tests.conftest import DATA_TABLES

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "supplier-samples"
REPO = Path(__file__).resolve().parents[2]


async def _supplier(conn: asyncpg.Connection, name: str = "ООО «СтройБаза»") -> int:
    return await conn.fetchval("INSERT INTO suppliers (name) VALUES ($1) RETURNING id", name)


async def _counts(conn: asyncpg.Connection) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM price_lists) AS lists, (SELECT count(*) FROM prices) AS prices, "
        "(SELECT count(*) FROM materials) AS materials, (SELECT count(*) FROM categories) AS categories, "
        "(SELECT count(*) FROM current_prices) AS current, (SELECT count(*) FROM outbox) AS events, "
        "(SELECT count(*) FROM price_list_rejected_rows) AS rejected")
    return dict(row)


async def test_four_versions_of_one_supplier_build_a_rising_history(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection
) -> None:
    supplier = await _supplier(conn)
    results = []
    for version in range(1, 5):
        results.append(await import_price_list(
            empty_catalog, supplier, SAMPLES / f"test_price_v{version}.csv",
            effective_at=datetime(2024, version, 10, tzinfo=UTC)))
    assert [r.version for r in results] == [1, 2, 3, 4] and not any(r.duplicate for r in results)
    statuses = await conn.fetch("SELECT version, status FROM price_lists WHERE supplier_id = $1 ORDER BY version", supplier)
    assert [(r["version"], r["status"]) for r in statuses] == [
        (1, "SUPERSEDED"), (2, "SUPERSEDED"), (3, "SUPERSEDED"), (4, "ACTIVE")]
    cement = await conn.fetchval("SELECT id FROM materials WHERE name = 'Цемент М400'")
    history = [r["unit_price"] for r in await conn.fetch(
        "SELECT unit_price FROM prices WHERE material_id = $1 ORDER BY valid_from", cement)]
    assert len(history) == 4 and history == sorted(history) and history[0] < history[-1]
    current = await conn.fetchrow("SELECT unit_price, price_list_id FROM current_prices WHERE material_id = $1", cement)
    assert current["unit_price"] == history[-1] and current["price_list_id"] == results[-1].price_list_id
    # Each version lands in its own monthly partition.
    assert await conn.fetchval("SELECT count(DISTINCT tableoid) FROM prices") == 4


async def test_the_same_file_twice_is_a_duplicate_and_changes_nothing(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection
) -> None:
    supplier = await _supplier(conn)
    first = await import_price_list(empty_catalog, supplier, SAMPLES / "large_supplier_50_materials_extended.csv")
    before = await _counts(conn)
    again = await import_price_list(empty_catalog, supplier, SAMPLES / "large_supplier_50_materials_extended.csv")
    assert again.duplicate and again.price_list_id == first.price_list_id and again.row_count == first.row_count
    assert await _counts(conn) == before
    # Another supplier may send the very same file: that is a new list of its own.
    other = await import_price_list(empty_catalog, await _supplier(conn, "АО «Другой»"),
                                    SAMPLES / "large_supplier_50_materials_extended.csv")
    assert not other.duplicate and other.version == 1


async def test_rows_match_by_sku_then_by_normalised_name_and_unit_alias(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection
) -> None:
    category = await conn.fetchval("INSERT INTO categories (name) VALUES ('Сыпучие материалы') RETURNING id")
    await conn.execute("UPDATE categories SET path = ARRAY[id] WHERE id = $1", category)
    sand = await conn.fetchval("INSERT INTO materials (name, unit_code) VALUES ('Песок речной мытый', 'м³') RETURNING id")
    brick = await conn.fetchval(
        "INSERT INTO materials (name, unit_code, sku) VALUES ('Кирпич М150', 'шт', 'BRK-150') RETURNING id")
    data = ("name,sku,use_category,unit,unit_price\n"
            "  ПЕСОК  речной   мытый ,,сыпучие материалы,куб.м,\"1 250,50\"\n"
            "Кирпич рядовой полнотелый,BRK-150,Кирпич,шт,15\n"
            "Щебень гранитный 5-20,,Сыпучие материалы,m3,2100\n"
            "Щебень гранитный 5-20,,Сыпучие материалы,м3,2050\n"
            "Гвозди,,Крепёж,парсек,10\n")
    result = await import_price_list(empty_catalog, await _supplier(conn), io.BytesIO(data.encode()), filename="p.csv")
    assert (result.row_count, result.rejected_count, result.materials_created) == (4, 1, 1)
    rows = await conn.fetch("SELECT material_id, unit_price FROM prices ORDER BY id")
    assert rows[0]["material_id"] == sand and rows[0]["unit_price"] == Decimal("1250.50")
    assert rows[1]["material_id"] == brick
    assert rows[2]["material_id"] == rows[3]["material_id"]  # m3 and м3 are one unit: one new material
    gravel = await conn.fetchrow("SELECT unit_code, category_id FROM materials WHERE id = $1", rows[2]["material_id"])
    assert gravel["unit_code"] == "м³" and gravel["category_id"] == category  # existing category reused
    # The last row of a material in the file is its current price.
    assert await conn.fetchval("SELECT unit_price FROM current_prices WHERE material_id = $1",
                               rows[2]["material_id"]) == Decimal("2050")
    rejected = await conn.fetchrow('SELECT line, "column", message FROM price_list_rejected_rows')
    assert (rejected["line"], rejected["column"]) == (6, "unit") and "парсек" in rejected["message"]
    assert await conn.fetchval("SELECT count(*) FROM categories WHERE lower(name) IN ('кирпич', 'крепёж')") == 1
    # New categories are roots with their own path, so category filters find their materials.
    assert await conn.fetchval("SELECT count(*) FROM categories WHERE path <> ARRAY[id]") == 0


@pytest.mark.parametrize(("sample", "message"), [
    ("invalid_missing_columns.csv", 'missing required column "use_category"'),
    ("empty_data.csv", "only a header"),
    ("building_materials.json", "no valid row"),
])
async def test_unusable_files_are_refused_and_store_nothing(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection, sample: str, message: str
) -> None:
    supplier = await _supplier(conn)
    before = await _counts(conn)
    with pytest.raises(PriceFileError, match=message):
        await import_price_list(empty_catalog, supplier, SAMPLES / sample)
    assert await _counts(conn) == before


async def test_bad_rows_are_rejected_with_line_and_reason_and_good_rows_land(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection
) -> None:
    result = await import_price_list(empty_catalog, await _supplier(conn), SAMPLES / "negative_price_data.csv")
    assert result.rejected_count >= 1 and result.row_count >= 1
    rejected = await conn.fetch('SELECT line, "column", message, raw FROM price_list_rejected_rows ORDER BY line')
    assert any("negative" in r["message"] and r["line"] > 1 and r["raw"] for r in rejected)
    assert await conn.fetchval("SELECT rejected_count FROM price_lists") == result.rejected_count


async def test_unknown_supplier(empty_catalog: PostgresBackend, conn: asyncpg.Connection) -> None:
    with pytest.raises(SupplierNotFound):
        await import_price_list(empty_catalog, 987654, SAMPLES / "test_price_v1.csv")


async def test_failure_part_way_leaves_nothing_and_no_events(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    supplier = await _supplier(conn)
    await import_price_list(empty_catalog, supplier, SAMPLES / "test_price_v1.csv")
    before = await _counts(conn)
    big = tmp_path / "big.csv"
    big.write_text("name,use_category,unit,price,description\n" + "".join(
        f"Профнастил С8 {i},Кровля,м2,{500 + i % 50},\n" for i in range(3000)), encoding="utf-8")
    monkeypatch.setattr(imports, "BATCH_ROWS", 500)
    seen = []

    def explode(rows: int) -> None:
        seen.append(rows)
        if len(seen) == 3:
            raise ConnectionResetError("connection lost in the middle of the import")

    with pytest.raises(BackendUnavailable, match="connection lost"):
        await import_price_list(empty_catalog, supplier, big, progress=explode)
    assert await _counts(conn) == before  # no version, no prices, no materials, no events
    assert await conn.fetchval("SELECT status FROM price_lists WHERE supplier_id = $1", supplier) == "ACTIVE"


async def test_events_exist_once_committed_and_describe_the_change(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection
) -> None:
    supplier = await _supplier(conn)
    await import_price_list(empty_catalog, supplier, SAMPLES / "test_price_v1.csv")
    await import_price_list(empty_catalog, supplier, SAMPLES / "test_price_v2.csv")
    events = await conn.fetch("SELECT id, topic, payload FROM outbox ORDER BY id")
    topics = [e["topic"] for e in events]
    assert topics.count("material.created") == 3
    changes = [e["payload"] for e in events if e["topic"] == "price.changed"]
    cement = next(c for c in changes if c["oldUnitPrice"] is not None and c["materialId"] == changes[1]["materialId"])
    assert Decimal(cement["newUnitPrice"]) > Decimal(cement["oldUnitPrice"])
    # A material's creation comes before any price of it.
    first_seen = {}
    for e in events:
        if "materialId" in e["payload"]:
            first_seen.setdefault((e["payload"]["materialId"]), e["topic"])
    assert set(first_seen.values()) == {"material.created"}
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)


async def test_cli_import_killed_mid_way_leaves_no_partial_version(database_url: str, tmp_path: Path) -> None:
    """A real `server.py import` process killed with SIGKILL while rows stream in: its
    transaction dies with it, so no version, no material and no event of that file exists."""
    big = tmp_path / "huge.csv"
    with big.open("w", encoding="utf-8") as out:
        out.write("name,use_category,unit,price,description\n")
        for i in range(400_000):
            out.write(f"Брус строганый 50x{50 + i % 150} партия {i},Пиломатериалы,м3,{9000 + i % 900},\n")
    env = {**os.environ, "DATABASE_URL": database_url, "SEED_DEMO": "0"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "server.py", "import", str(big), "--supplier", "ООО «Лесторг»", "--create-supplier",
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    conn = await asyncpg.connect(database_url)
    try:
        # Kill once the import's COPY is running (rows are streaming into the server).
        for _ in range(600):
            copying = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY%'")
            if copying or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert proc.returncode is None, (await proc.stdout.read()).decode(errors="replace")[-2000:]
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        # PostgreSQL rolls the dead client's transaction back once it sees the closed socket.
        for _ in range(200):
            if not await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state <> 'idle'"):
                break
            await asyncio.sleep(0.05)
        assert await conn.fetchval(
            "SELECT count(*) FROM price_lists pl JOIN suppliers s ON s.id = pl.supplier_id "
            "WHERE s.name = 'ООО «Лесторг»'") == 0
        assert await conn.fetchval("SELECT count(*) FROM materials WHERE name LIKE 'Брус строганый%'") == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE payload->>'name' LIKE 'Брус строганый%'") == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await conn.close()


@pytest.mark.parametrize("sample", ["test_price_v1.csv", "building_materials.json", "stroyactiv-table.csv"])
def test_the_early_checksum_is_the_parsers_checksum(sample: str) -> None:
    from backends.pricefile import read_price_file

    path = SAMPLES / sample
    parsed = read_price_file(path)
    try:
        for _ in parsed.rows():
            pass
    except PriceFileError:
        pass  # a file with no valid row still has its checksum
    with path.open("rb") as stream:
        stream.read(7)
        stream.seek(0)
        assert imports._checksum_first(stream) == imports._checksum_first(path) == parsed.checksum
        assert stream.tell() == 0  # the stream is left where it was


@pytest.mark.parametrize("sample", [*sorted(p.name for p in SAMPLES.iterdir() if p.suffix == ".csv"), "tricky"])
async def test_the_csv_fast_path_stores_what_the_reference_path_stores(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    sample: str,
) -> None:
    """The parser's fast path hands cells to SQL as written (`1 234,50`); the reference path
    converts them in Python. Both must leave the same prices, materials, rejects and events."""
    path = tricky_csv(tmp_path / "tricky.csv", delimiter=";") if sample == "tricky" else SAMPLES / sample
    stored = {}
    for fast in (True, False):
        await conn.execute(f"TRUNCATE {DATA_TABLES} RESTART IDENTITY CASCADE")
        monkeypatch.setattr(imports, "FAST_CSV", fast)
        supplier = await _supplier(conn)
        try:
            result = await import_price_list(empty_catalog, supplier, path,
                                             effective_at=datetime(2024, 5, 1, tzinfo=UTC))
        except PriceFileError as exc:
            stored[fast] = str(exc)
            continue
        prices = await conn.fetch(
            "SELECT p.material_id, m.name, m.sku, m.unit_code, m.description, c.name AS category, "
            "p.unit_price::text, p.currency, p.calc_unit_code, p.unit_calc_price::text, p.buy_price::text, "
            "p.sale_price::text, p.stock, p.price_date FROM prices p JOIN materials m ON m.id = p.material_id "
            "LEFT JOIN categories c ON c.id = m.category_id ORDER BY p.id")
        rejected = await conn.fetch(
            'SELECT line, "column", message, raw FROM price_list_rejected_rows ORDER BY line, message')
        events = await conn.fetch("SELECT topic, entity_id, payload::text FROM outbox ORDER BY id")
        current = await conn.fetch("SELECT material_id, unit_price::text, price_id FROM current_prices ORDER BY 1")
        stored[fast] = (result.row_count, result.rejected_count, result.materials_created, result.events,
                        [tuple(r) for r in prices], [tuple(r) for r in rejected], [tuple(r) for r in events],
                        [tuple(r) for r in current])
    assert stored[True] == stored[False]
    if sample == "tricky":
        assert stored[True][0] > 800 and stored[True][1] > 40
        assert any(message.startswith("unit: unknown unit") for _, _, message, _ in stored[True][5])


# The payloads as jsonb_build_object() made them before the import put their JSON text together.
_EXPECTED_PRICE_PAYLOAD = """
SELECT e.id, e.payload = jsonb_build_object(
           'materialId', p.material_id, 'supplierId', p.supplier_id, 'priceListId', p.price_list_id,
           'currency', p.currency,
           'oldUnitPrice', (SELECT o.unit_price::text FROM prices o
                            WHERE o.material_id = p.material_id AND o.supplier_id = p.supplier_id
                              AND o.price_list_id < p.price_list_id ORDER BY o.price_list_id DESC, o.id DESC LIMIT 1),
           'newUnitPrice', p.unit_price::text, 'categoryPath', to_jsonb(c.path),
           'price', jsonb_build_object(
               'id', p.id, 'unitPrice', p.unit_price::text, 'currency', p.currency, 'calcUnit', p.calc_unit_code,
               'unitCalcPrice', p.unit_calc_price::text, 'buyPrice', p.buy_price::text,
               'salePrice', p.sale_price::text, 'stock', p.stock, 'priceDate', p.price_date,
               'validFrom', p.valid_from)) AS same
FROM outbox e
JOIN prices p ON p.id = (e.payload->'price'->>'id')::bigint
JOIN materials m ON m.id = p.material_id LEFT JOIN categories c ON c.id = m.category_id
WHERE e.topic = 'price.changed'
"""


async def test_event_payloads_are_the_json_they_always_were(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection
) -> None:
    """The import's events are typed rows whose JSON the view `outbox` puts together as text
    (migrations/0011, 0013): every value, escape and null must come out as
    jsonb_build_object made it."""
    supplier = await _supplier(conn)
    header = ("name,sku,use_category,unit_price,unit_price_currency,unit_calc_price,unit_calc_price_currency,"
              "buy_price,buy_price_currency,sale_price,sale_price_currency,calc_unit,count,date_price_change\n")
    v1 = header + (
        '"Болт ""М8"" \\ 50, ёмкость\tтаб",BLT-8,Крепёж,"1 234,50",RUB,12,RUB,1000,RUB,1500,RUB,шт,10,15.11.2026\n'
        "Песок речной,,,300,RUB,,,,,,,м3,,\n"
        "Уходит из прайса,,Разное,10,USD,,,,,,,кг,5,2026-11-01\n")
    v2 = header + (
        '"Болт ""М8"" \\ 50, ёмкость\tтаб",BLT-8,Крепёж,"1 300",RUB,12,RUB,1000,RUB,1500,RUB,шт,10,16.11.2026\n'
        "Песок речной,,,300,RUB,,,,,,,м3,,\n"
        "Café crème,,Разное,5,EUR,,,,,,,л,1,\n")
    for version, text in enumerate((v1, v2), start=1):
        await import_price_list(empty_catalog, supplier, io.BytesIO(text.encode()), filename=f"v{version}.csv",
                                effective_at=datetime(2026, 11, version, 12, 30, 15, 123456, tzinfo=UTC))
    checked = await conn.fetch(_EXPECTED_PRICE_PAYLOAD)
    assert len(checked) == 5 and all(r["same"] for r in checked)  # 3 new in v1; in v2 the bolt and the café
    gone = await conn.fetchrow(
        "SELECT e.entity_id, e.payload FROM outbox e WHERE e.topic = 'price.changed' AND e.payload->'price' = 'null'")
    leaving = await conn.fetchrow("SELECT m.id, c.path FROM materials m JOIN categories c ON c.id = m.category_id "
                                  "WHERE m.name = 'Уходит из прайса'")
    assert gone["entity_id"] == leaving["id"]
    assert gone["payload"] == {
        "materialId": leaving["id"], "supplierId": supplier, "priceListId": gone["payload"]["priceListId"],
        "currency": "USD", "oldUnitPrice": "10", "newUnitPrice": None, "categoryPath": list(leaving["path"]),
        "price": None}
    created = await conn.fetch(
        "SELECT e.payload = jsonb_build_object('materialId', m.id, 'sku', m.sku, 'name', m.name, 'unit', m.unit_code, "
        "'source', 'import') AS same, m.name FROM outbox e JOIN materials m ON m.id = e.entity_id "
        "WHERE e.topic = 'material.created'")
    assert len(created) == 4 and all(r["same"] for r in created)
    assert 'Болт "М8" \\ 50, ёмкость\tтаб' in {r["name"] for r in created}
    # The readers parse the text form (outbox_reader): the same JSON, escapes and all.
    texts = await conn.fetch("SELECT topic, payload_text::jsonb = payload AS same FROM outbox")
    assert len(texts) == 12 and all(r["same"] for r in texts)  # 4 created, 6 price changes, 2 lists


@pytest.mark.parametrize("name", [
    "  Цемент  М500 ", "Ёлка\tЁЖИК", "\tтаб впереди", "x\x0by\x0cz\r\nw", "ТЕСТ   ёё  ", "Профиль «ПН» №5 – 50×40",
    "a\u00a0b", "Café", "İstanbul", "Straße", "a\x1cb", "ẞ", "Ω", "і", "中文",
])
async def test_the_name_key_computed_in_python_is_the_databases(conn: asyncpg.Connection, name: str) -> None:
    """The worker thread computes name keys (imports.name_key); where it cannot be sure, it
    leaves them to material_name_key() in SQL. Where it answers, it must agree with SQL."""
    python = imports.name_key(name)
    sql = await conn.fetchval("SELECT material_name_key($1)", name)
    assert python is None or python == sql
    if all(" " <= ch <= "~" or ch in "\t\n\v\f\r«»№–—×ЁёЕ" or "А" <= ch <= "я" for ch in name):
        assert python is not None  # ASCII and Russian names, the common case, never need SQL


async def test_names_keyed_in_sql_still_match(empty_catalog: PostgresBackend, conn: asyncpg.Connection) -> None:
    """A name the worker thread leaves to SQL (a Latin accent, a no-break space) matches as before."""
    cafe = await conn.fetchval("INSERT INTO materials (name, unit_code) VALUES ('Café  Crème', 'шт') RETURNING id")
    nbsp = await conn.fetchval("INSERT INTO materials (name, unit_code) VALUES ('Болт\u00a0М8', 'шт') RETURNING id")
    data = "name,use_category,unit,price\n café crème ,,шт,10\nболт\u00a0м8,,шт,5\n"
    result = await import_price_list(empty_catalog, await _supplier(conn), io.BytesIO(data.encode()), filename="p.csv")
    assert result.materials_created == 0
    assert [r["material_id"] for r in await conn.fetch("SELECT material_id FROM prices ORDER BY id")] == [cafe, nbsp]
