"""backends.pricefile: supplier price lists (CSV, XLSX, JSON) read as streams of validated rows."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import tracemalloc
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest

from backends.pricefile import (
    STAGING_FIELDS,
    PriceFile,
    PriceFileError,
    PriceRow,
    RowError,
    read_price_file,
    staging_record,
)

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "supplier-samples"


def collect(pf: PriceFile) -> tuple[list[PriceRow], list[RowError]]:
    rows: list[PriceRow] = []
    errors: list[RowError] = []
    for item in pf.rows():
        (rows if isinstance(item, PriceRow) else errors).append(item)
    return rows, errors


def parse_text(tmp_path: Path, text: str, name: str = "list.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    pf = read_price_file(path)
    return pf, *collect(pf)


# --------------------------------------------------------------------------- the samples


@pytest.mark.parametrize(
    ("name", "fmt", "count"),
    [
        ("valid_prices.csv", "csv", 4),
        ("test_price_v1.csv", "csv", 2),
        ("test_price_v2.csv", "csv", 3),
        ("test_price_v3.csv", "csv", 4),
        ("test_price_v4.csv", "csv", 5),
        ("large_supplier_50_materials.csv", "csv", 51),
        ("large_supplier_50_materials_extended.csv", "csv", 51),
        ("raw_products_example.csv", "csv", 5),
        ("raw_products_example2.csv", "csv", 3),
        ("extended_format_sample.csv", "csv", 3),
        ("stroyactiv-table.csv", "csv", 1),
        ("test_materials_image.json", "json", 39),
    ],
)
def test_clean_samples_parse(name: str, fmt: str, count: int) -> None:
    path = SAMPLES / name
    pf = read_price_file(path)
    assert pf.format == fmt
    assert pf.filename == name
    rows, errors = collect(pf)
    assert errors == []
    assert (pf.row_count, pf.rejected_count) == (count, 0)
    assert len(rows) == count
    assert all(row.name and row.unit_price >= 0 and row.currency == "RUB" for row in rows)
    assert pf.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    if fmt == "csv":
        assert (pf.encoding, pf.delimiter) == ("utf-8", ",")
        assert [row.line for row in rows] == list(range(2, count + 2))
    else:
        assert [row.line for row in rows] == list(range(1, count + 1))


def test_short_format_values() -> None:
    pf = read_price_file(SAMPLES / "valid_prices.csv")
    rows, _ = collect(pf)
    assert pf.columns == ["name", "use_category", "unit", "price", "description"]
    assert pf.ignored_columns == []
    first = rows[0]
    assert (first.line, first.name, first.category, first.unit) == (
        2,
        "Cement Portland",
        "Building Materials",
        "kg",
    )
    assert first.unit_price == Decimal("45.50")
    assert first.description == "High quality cement"
    assert first.sku is None and first.stock is None and first.price_date is None
    assert rows[3].unit_price == Decimal("2.30") and rows[3].unit == "piece"


def test_export_format_values() -> None:
    rows, _ = collect(read_price_file(SAMPLES / "large_supplier_50_materials_extended.csv"))
    cement = rows[0]
    assert cement.name == "Цемент М400"
    assert cement.sku == "ЦЕМ_М40_436"
    assert cement.category == "Вяжущие материалы"
    assert cement.unit_price == Decimal("45.5")
    assert cement.currency == "RUB"
    assert (cement.unit_calc_price, cement.buy_price, cement.sale_price) == (
        Decimal("44.02"),
        Decimal("40.4"),
        Decimal("52.66"),
    )
    assert cement.calc_unit == "кг"
    assert cement.stock == 838
    assert cement.price_date == date(2024, 12, 1)
    last = rows[-1]
    assert (last.line, last.name, last.calc_unit, last.stock) == (
        52,
        "Грунтовка глубокого проникновения",
        "л",
        939,
    )


def test_quoted_export_sample() -> None:
    rows, _ = collect(read_price_file(SAMPLES / "raw_products_example.csv"))
    assert [r.sku for r in rows] == ["CEM001", "SAND001", "BRICK001", "REBAR001", "CONCRETE001"]
    assert rows[1].calc_unit == "м³" and rows[1].unit_price == Decimal("1300.000")


def test_supplier_own_export_header() -> None:
    pf = read_price_file(SAMPLES / "stroyactiv-table.csv")
    (row,), _ = collect(pf)
    assert row.sku == "CCC0000UU"
    assert row.name == "краска напольная 0.33л"
    assert row.unit_price == Decimal("250.00")
    assert row.unit == "шт"
    assert row.calc_unit == "л"  # from unit_calc
    assert row.category == "окрасочные материалы"  # from category
    assert row.unit_calc_coefficient == Decimal("3.03")
    assert row.unit_calc_weight_kg == Decimal("0.5")
    assert row.unit_calc_volume_m3 == Decimal("0.33")
    assert row.unit_quantity == Decimal("10")
    assert (row.buy_price, row.sale_price) == (Decimal("0"), Decimal("0"))
    assert row.price_date == date(2023, 12, 20)
    assert row.description is None


def test_json_shop_sample() -> None:
    pf = read_price_file(SAMPLES / "test_materials_image.json")
    rows, _ = collect(pf)
    assert pf.encoding == "utf-8" and pf.delimiter is None
    assert pf.columns == ["name", "unit", "price"]
    assert (rows[0].line, rows[0].name, rows[0].unit, rows[0].unit_price) == (
        1,
        "Цемент 50кг",
        "меш",
        Decimal("300.0"),
    )
    assert rows[-1].name == "Бита удлин. PH2 50mm" and rows[-1].unit_price == Decimal("30.0")


@pytest.mark.parametrize(
    ("name", "count"), [("building_materials.json", 50), ("materials_database.json", 62)]
)
def test_json_catalogs_without_prices_are_refused(name: str, count: int) -> None:
    pf = read_price_file(SAMPLES / name)
    seen: list[RowError] = []
    with pytest.raises(PriceFileError, match=rf"no valid row: all {count} rows were rejected"):
        for item in pf.rows():
            assert isinstance(item, RowError)
            seen.append(item)
    assert len(seen) == count == pf.rejected_count
    assert seen[0].line == 1 and seen[0].column == "unit_price"
    assert seen[0].message.startswith("unit_price: missing")
    assert "sku" in pf.columns
    if name == "materials_database.json":
        assert {"id", "created_at", "updated_at"} <= set(pf.ignored_columns)
        assert '"ARM0001"' in seen[0].raw


def test_invalid_price_sample() -> None:
    pf = read_price_file(SAMPLES / "invalid_price_data.csv")
    items = list(pf.rows())
    assert isinstance(items[0], RowError)
    assert items[0].line == 2
    assert items[0].column == "price"
    assert items[0].message == 'price: "invalid_price" is not a number'
    assert items[0].raw == 'Cement Portland,Building Materials,kg,invalid_price,"High quality cement"'
    assert isinstance(items[1], PriceRow) and items[1].line == 3 and items[1].unit_price == Decimal("1200.00")
    assert (pf.row_count, pf.rejected_count) == (1, 1)


def test_negative_price_sample() -> None:
    pf = read_price_file(SAMPLES / "negative_price_data.csv")
    rows, errors = collect(pf)
    assert [(e.line, e.column, e.message) for e in errors] == [(2, "price", "price: negative price -45.50")]
    assert [r.name for r in rows] == ["Sand Construction"]


def test_missing_column_samples() -> None:
    # The short format is name,use_category,unit,price[,description]: this one lacks use_category.
    with pytest.raises(
        PriceFileError,
        match=r'line 1: missing required column "use_category" \(found: name, unit, price, description\)',
    ):
        read_price_file(SAMPLES / "invalid_missing_columns.csv")
    with pytest.raises(
        PriceFileError, match=r'missing required column "unit_price" \(or "price"\) \(found: name, unit\)'
    ):
        read_price_file(SAMPLES / "main_processable_format.csv")


def test_header_only_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(PriceFileError, match="only a header"):
        read_price_file(SAMPLES / "empty_data.csv")
    for content in (b"", b"  \r\n\n", b"\xef\xbb\xbf"):
        (tmp_path / "e.csv").write_bytes(content)
        with pytest.raises(PriceFileError, match="empty file"):
            read_price_file(tmp_path / "e.csv")
    (tmp_path / "e.json").write_bytes(b"[ ]")
    with pytest.raises(PriceFileError, match="JSON array is empty"):
        read_price_file(tmp_path / "e.json")


def test_price_versions_rise() -> None:
    versions = [
        {row.name: row.unit_price for row in collect(read_price_file(SAMPLES / f"test_price_v{n}.csv"))[0]}
        for n in range(1, 5)
    ]
    assert [len(v) for v in versions] == [2, 3, 4, 5]
    for older, newer in itertools.pairwise(versions):
        assert older.keys() < newer.keys()
        assert all(newer[name] > price for name, price in older.items())
    assert versions[0]["Цемент М400"] == Decimal("300.00") and versions[3]["Цемент М400"] == Decimal("360.00")
    assert versions[3]["Бетон"] == Decimal("4000.00")


# --------------------------------------------------------------------------- encodings and delimiters


def test_encodings_and_delimiters_parse_identically(tmp_path: Path) -> None:
    # cp1251 has no "³": the variants are made from the sample with "м³" written "м3".
    text = (SAMPLES / "test_price_v4.csv").read_text(encoding="utf-8").replace("м³", "м3")
    original = text.encode()
    (tmp_path / "base.csv").write_bytes(original)
    variants = {
        "cp1251": (text.encode("cp1251"), "cp1251", ","),
        "bom": (b"\xef\xbb\xbf" + original, "utf-8-sig", ","),
        "semicolon": (text.replace(",", ";").encode(), "utf-8", ";"),
        "tab": (text.replace(",", "\t").encode(), "utf-8", "\t"),
        "crlf-cp1251-semicolon": (
            text.replace(",", ";").replace("\n", "\r\n").encode("cp1251"),
            "cp1251",
            ";",
        ),
        "utf16": (text.replace(",", "\t").encode("utf-16"), "utf-16", "\t"),
    }
    expected = [row.as_tuple() for row in collect(read_price_file(tmp_path / "base.csv"))[0]]
    assert len(expected) == 5
    for label, (data, encoding, delimiter) in variants.items():
        path = tmp_path / f"{label}.csv"
        path.write_bytes(data)
        pf = read_price_file(path)
        rows, errors = collect(pf)
        assert errors == [], label
        assert (pf.encoding, pf.delimiter) == (encoding, delimiter), label
        assert pf.columns == ["name", "use_category", "unit", "price", "description"], label
        assert [row.as_tuple() for row in rows] == expected, label
        assert pf.checksum == hashlib.sha256(data).hexdigest(), label


def test_excel_sep_line_and_header_case(tmp_path: Path) -> None:
    pf, rows, errors = parse_text(
        tmp_path, 'sep=;\n " Name ";PRICE;Unit;Use_Category;Colour\nЦемент;1 234,50;кг;Вяжущие;серый\n'
    )
    assert pf.delimiter == ";"
    assert pf.columns == ["name", "price", "unit", "use_category", "colour"]
    assert pf.ignored_columns == ["colour"]
    assert errors == []
    assert (rows[0].line, rows[0].unit_price) == (3, Decimal("1234.50"))


def test_cp1251_detected_beyond_ascii_prefix(tmp_path: Path) -> None:
    text = "name;price;unit;use_category\n" + "a;1;kg;x\n" * 5000 + "Цемент;300,5;кг;Вяжущие\n"
    pf, rows, _ = parse_text(tmp_path, text, encoding="cp1251")
    assert pf.encoding == "cp1251"
    assert rows[-1].name == "Цемент" and rows[-1].unit_price == Decimal("300.5")


def test_undecodable_bytes_after_the_prefix(tmp_path: Path) -> None:
    # The first 64 KiB are UTF-8, a later line is not: the file is refused with the line.
    data = b"name,price,unit,use_category\n" + b"a,1,kg,x\n" * 10000 + "Цемент,3,кг,x\n".encode("cp1251")
    (tmp_path / "mixed.csv").write_bytes(data)
    pf = read_price_file(tmp_path / "mixed.csv")
    with pytest.raises(PriceFileError, match=r"line 10002: bytes not valid in utf-8"):
        collect(pf)


# --------------------------------------------------------------------------- CSV structure


def test_quoted_newlines_keep_physical_line_numbers(tmp_path: Path) -> None:
    text = (
        "name,use_category,unit,price,description\n"
        'Цемент,Вяжущие,кг,300,"марка М400\n50 кг, мешок\nбумажный"\n'
        "\n"
        'Песок,Сыпучие,м³,"1 100,00","речной, мытый"\n'
        "Кирпич,Кладочные,шт,abc,\n"
        "Щебень,Сыпучие,м³,1800,\n"
    )
    _, rows, errors = parse_text(tmp_path, text)
    assert [(r.line, r.name) for r in rows] == [(2, "Цемент"), (6, "Песок"), (8, "Щебень")]
    assert rows[0].description == "марка М400\n50 кг, мешок\nбумажный"
    assert rows[1].unit_price == Decimal("1100.00") and rows[1].description == "речной, мытый"
    assert [(e.line, e.column, e.message) for e in errors] == [(7, "price", 'price: "abc" is not a number')]
    assert errors[0].raw == "Кирпич,Кладочные,шт,abc,"


def test_wrong_field_count_and_blank_rows(tmp_path: Path) -> None:
    text = "name,price,unit,use_category\nЦемент, М400,300,кг,x\nПесок,1200,м³\n,,,\nГвозди,5,кг,x,,\n"
    pf, rows, errors = parse_text(tmp_path, text)
    assert [(e.line, e.column, e.message) for e in errors] == [
        (2, None, "expected 4 fields, found 5"),
        (3, None, "expected 4 fields, found 3"),
    ]
    assert [(r.line, r.name) for r in rows] == [(5, "Гвозди")]  # trailing empty fields are fine
    assert (pf.row_count, pf.rejected_count) == (1, 2)


def test_raw_is_truncated(tmp_path: Path) -> None:
    _, _, errors = parse_text(tmp_path, f"name,price,unit,use_category\nx,bad,kg,{'y' * 2000}\nz,1,kg,y\n")
    assert len(errors[0].raw) == 500


def test_duplicate_and_alias_columns(tmp_path: Path) -> None:
    (tmp_path / "dup.csv").write_text("name,price,name\na,1,b\n")
    with pytest.raises(PriceFileError, match=r'duplicate column "name" \(columns 1 and 3\)'):
        read_price_file(tmp_path / "dup.csv")
    pf, rows, _ = parse_text(tmp_path, "name,price,unit_price\na,1,2\n")
    assert rows[0].unit_price == Decimal("2") and pf.ignored_columns == ["price"]


def test_no_valid_row_in_csv(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("name,unit_price\na,x\nb,-1\n")
    pf = read_price_file(tmp_path / "bad.csv")
    with pytest.raises(
        PriceFileError,
        match=r'no valid row: all 2 rows were rejected \(first: line 2: unit_price: "x" is not a number\)',
    ):
        list(pf.rows())
    assert pf.rejected_count == 2


# --------------------------------------------------------------------------- values

HEADER = "name,unit_price,unit_price_currency,buy_price,buy_price_currency,count,date_price_change\n"


@pytest.mark.parametrize(
    ("cells", "field", "expected"),
    [
        ('"1 234,50",,,,,', "unit_price", Decimal("1234.50")),
        ('"1\u00a0234,5",,,,,', "unit_price", Decimal("1234.5")),
        ("1234.5,,,,,", "unit_price", Decimal("1234.5")),
        ('"1,234.50",,,,,', "unit_price", Decimal("1234.50")),
        ('"12,5",,,,,', "unit_price", Decimal("12.5")),
        ("0,,,,,", "unit_price", Decimal("0")),
        ("1,,,,,", "currency", "RUB"),
        ("1,руб.,,,,", "currency", "RUB"),
        ("1,₽,,,,", "currency", "RUB"),
        ("1,р,,,,", "currency", "RUB"),
        ("1,$,,,,", "currency", "USD"),
        ("1,€,,,,", "currency", "EUR"),
        ("1,usd,2,USD,,", "currency", "USD"),
        ("1,KZT,,,,", "currency", "KZT"),
        ('1,,,,"12,0",', "stock", 12),
        ('1,,,,"1 000",', "stock", 1000),
        ("1,,,,,31.01.2024", "price_date", date(2024, 1, 31)),
        ("1,,,,,2024-02-29", "price_date", date(2024, 2, 29)),
        ("1,,  ,, ,", "stock", None),
    ],
)
def test_values(tmp_path: Path, cells: str, field: str, expected: object) -> None:
    _, rows, errors = parse_text(tmp_path, HEADER + "Цемент," + cells + "\n")
    assert errors == []
    assert getattr(rows[0], field) == expected


@pytest.mark.parametrize(
    ("cells", "column", "message"),
    [
        ("abc,,,,,", "unit_price", 'unit_price: "abc" is not a number'),
        (",,,,,", "unit_price", "unit_price: missing"),
        ("-5.00,,,,,", "unit_price", "unit_price: negative price -5.00"),
        ('"-5,5",,,,,', "unit_price", "unit_price: negative price -5.5"),
        ("NaN,,,,,", "unit_price", 'unit_price: "NaN" is not a finite number'),
        ("inf,,,,,", "unit_price", 'unit_price: "inf" is not a finite number'),
        ('"1,2,3",,,,,', "unit_price", 'unit_price: "1,2,3" is not a number'),
        ('"1.234,50",,,,,', "unit_price", 'unit_price: "1.234,50" is not a number'),
        ("1e30,,,,,", "unit_price", 'unit_price: "1e30" is out of range'),
        ("1,XYZ,,,,", "unit_price_currency", 'unit_price_currency: unknown currency "XYZ"'),
        ("1,рубли,,,,", "unit_price_currency", 'unit_price_currency: unknown currency "рубли"'),
        (
            "1,RUB,2,USD,,",
            "buy_price_currency",
            'buy_price_currency: currency "USD" differs from the row\'s currency "RUB"',
        ),
        ("1,,-2,,,", "buy_price", "buy_price: negative price -2"),
        ('1,,,,"12,5",', "count", 'count: "12,5" is not a whole number'),
        ("1,,,,-3,", "count", "count: negative stock -3"),
        ("1,,,,,31.02.2024", "date_price_change", 'date_price_change: "31.02.2024" is not a valid date'),
        ("1,,,,,2024/01/15", "date_price_change", 'date_price_change: "2024/01/15" is not a valid date'),
    ],
)
def test_rejections(tmp_path: Path, cells: str, column: str, message: str) -> None:
    _, rows, errors = parse_text(tmp_path, HEADER + "Цемент," + cells + "\nOK,1,,,,,\n")
    assert [(e.line, e.column, e.message) for e in errors] == [(2, column, message)]
    assert [r.name for r in rows] == ["OK"]


def test_missing_name_is_the_first_bad_column(tmp_path: Path) -> None:
    _, _, errors = parse_text(tmp_path, HEADER + " ,abc,XYZ,,,,\nOK,1,,,,,\n")
    assert errors[0].message == "name: missing" and errors[0].column == "name"


# --------------------------------------------------------------------------- JSON


def test_json_rows_and_catalog_object(tmp_path: Path) -> None:
    data = [
        {"Name": "Цемент", "sku": 400, "price": "1 234,50", "unit_price_currency": "руб", "count": 3},
        {"name": "Песок", "unit_price": 1300.25, "date_price_change": "15.01.2024", "extra": {"a": [1, 2]}},
        {"name": "Кирпич", "unit_price": -1},
        ["not", "an", "object"],
        {"name": "Щебень"},
    ]
    (tmp_path / "rows.json").write_text("\ufeff" + json.dumps(data, ensure_ascii=False), encoding="utf-8")
    pf = read_price_file(tmp_path / "rows.json")
    items = list(pf.rows())
    assert isinstance(items[0], PriceRow) and isinstance(items[1], PriceRow)
    assert (items[0].line, items[0].sku, items[0].unit_price, items[0].currency, items[0].stock) == (
        1,
        "400",
        Decimal("1234.50"),
        "RUB",
        3,
    )
    assert (items[1].unit_price, items[1].price_date) == (Decimal("1300.25"), date(2024, 1, 15))
    assert [(e.line, e.column, e.message) for e in items[2:]] == [
        (3, "unit_price", "unit_price: negative price -1"),
        (4, None, "row is a JSON list, not an object"),
        (5, "unit_price", 'unit_price: missing (the row has no "unit_price" or "price")'),
    ]
    assert json.loads(items[2].raw) == data[2]
    assert pf.ignored_columns == ["extra"]
    assert pf.checksum == hashlib.sha256((tmp_path / "rows.json").read_bytes()).hexdigest()

    wrapped = {"metadata": {"items": 1}, "products": data[:2], "statistics": {}}
    pf = read_price_file(io.BytesIO(json.dumps(wrapped).encode()))
    assert [r.line for r in pf.rows()] == [1, 2]


def test_json_refusals(tmp_path: Path) -> None:
    with pytest.raises(PriceFileError, match="JSON object without an array of rows"):
        read_price_file(io.BytesIO(b'{"metadata": {}, "other": [1]}'))
    pf = read_price_file(io.BytesIO(b'[{"name": "a", "price": 1}, {"name": "b", "price": '))
    with pytest.raises(PriceFileError, match="invalid JSON after row 1"):
        list(pf.rows())
    with pytest.raises(PriceFileError, match=r'"x\.json" is named as JSON'):
        read_price_file(io.BytesIO(b"name,price\na,1\n"), filename="x.json")


# --------------------------------------------------------------------------- XLSX


def make_xlsx(path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(
        [
            "Name",
            "SKU",
            "use_category",
            "unit_price",
            "unit_price_currency",
            "count",
            "date_price_change",
            "Notes",
        ]
    )
    ws.append(["Цемент М400", "CEM400", "Вяжущие", 360.5, "RUB", 1000, datetime(2024, 1, 15)])
    ws.append(["Песок", 12345, "Сыпучие", "1 300,00", None, 12.0, "15.01.2024", "ignored"])
    ws.append([])
    ws.append(["Кирпич", "BR1", "Кладочные", -15, "RUB", 5, None])
    ws.append(["Арматура", "AR1", "Металл", 55, "руб.", None, None])
    wb.save(path)


def test_xlsx_parses(tmp_path: Path) -> None:
    path = tmp_path / "list.xlsx"
    make_xlsx(path)
    pf = read_price_file(path)
    assert pf.format == "xlsx" and pf.encoding is None and pf.delimiter is None
    assert pf.checksum == hashlib.sha256(path.read_bytes()).hexdigest()  # known at once for XLSX
    assert pf.ignored_columns == ["notes"]
    rows, errors = collect(pf)
    assert [(r.line, r.name) for r in rows] == [(2, "Цемент М400"), (3, "Песок"), (6, "Арматура")]
    cement, sand, rebar = rows
    assert (cement.unit_price, cement.stock, cement.price_date) == (Decimal("360.5"), 1000, date(2024, 1, 15))
    assert (sand.sku, sand.unit_price, sand.currency, sand.stock, sand.price_date) == (
        "12345",
        Decimal("1300.00"),
        "RUB",
        12,
        date(2024, 1, 15),
    )
    assert rebar.currency == "RUB" and rebar.unit_price == Decimal("55")
    assert [(e.line, e.column, e.message) for e in errors] == [
        (5, "unit_price", "unit_price: negative price -15")
    ]
    assert errors[0].raw.startswith("Кирпич\tBR1\tКладочные\t-15")

    # The same bytes from a stream (spooled) and under a misleading name parse the same way.
    stream_pf = read_price_file(io.BytesIO(path.read_bytes()), filename="list.csv")
    assert stream_pf.format == "xlsx"
    assert [r.as_tuple() for r in collect(stream_pf)[0]] == [r.as_tuple() for r in rows]


def test_xlsx_missing_column_and_broken_zip(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    wb.active.append(["name", "unit"])
    wb.active.append(["Цемент", "кг"])
    wb.save(tmp_path / "nopice.xlsx")
    with pytest.raises(PriceFileError, match=r'row 1: missing required column "unit_price" \(or "price"\)'):
        read_price_file(tmp_path / "nopice.xlsx")
    with pytest.raises(PriceFileError, match="unreadable XLSX file"):
        read_price_file(io.BytesIO(b"PK\x03\x04" + b"\x00" * 100))


def test_unknown_formats() -> None:
    with pytest.raises(PriceFileError, match=r"legacy Excel \.xls"):
        read_price_file(io.BytesIO(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600))
    with pytest.raises(PriceFileError, match="binary data"):
        read_price_file(io.BytesIO(b"\x1f\x8b\x08\x00\x00\x00name"))
    with pytest.raises(PriceFileError, match="cannot read"):
        read_price_file("/nonexistent/prices.csv")


# --------------------------------------------------------------------------- streaming


def test_checksum_and_single_iteration_from_stream() -> None:
    data = (SAMPLES / "raw_products_example.csv").read_bytes()
    stream = io.BytesIO(data)
    pf = read_price_file(stream)
    with pytest.raises(RuntimeError):
        _ = pf.checksum
    assert len(list(pf.rows())) == 5
    assert pf.checksum == hashlib.sha256(data).hexdigest()
    assert not stream.closed  # the caller's stream is left open
    with pytest.raises(RuntimeError):
        pf.rows()


def test_large_file_streams_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(
            "name;sku;use_category;unit_price;unit_price_currency;count;date_price_change;description\n"
        )
        for i in range(200_000):
            price = "abc" if i % 50_000 == 7 else f"{i % 900 + 1} {i % 1000:03d},{i % 100:02d}"
            out.write(
                f"Материал {i};SKU{i:07d};Категория {i % 40};{price};RUB;{i % 500};01.02.2024;описание {i}\n"
            )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    tracemalloc.start()
    try:
        pf = read_price_file(path)
        rows = errors = 0
        last = None
        for item in pf.rows():
            if type(item) is PriceRow:
                rows += 1
                last = item
            else:
                errors += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (rows, errors) == (199_996, 4)
    assert (pf.row_count, pf.rejected_count) == (rows, errors)
    assert last is not None and last.line == 200_001 and last.sku == "SKU0199999"
    assert pf.checksum == digest
    assert peak < 30 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


# --------------------------------------------------------------------------- staging records (the CSV fast path)

STAGING_NUMBERS = ("unit_price", "unit_calc_price", "buy_price", "sale_price")
TRICKY_HEADER = [
    "name", "sku", "use_category", "unit", "unit_price", "unit_price_currency", "unit_calc_price",
    "unit_calc_price_currency", "buy_price", "buy_price_currency", "sale_price", "sale_price_currency",
    "calc_unit", "count", "date_price_change", "unit_calc_weight_kg", "note", "description",
]  # fmt: skip
# Cells that stress every converter: the fast path must pass through exactly what the converters
# accept and hand everything else to them. Keys are columns; the rest of the row is plain.
TRICKY_CELLS: list[dict[str, str]] = [
    {},
    {"unit_price": "1 234,50"}, {"unit_price": "1\u00a0234,50"}, {"unit_price": "1\u202f234.5"},
    {"unit_price": "1\u2009234\u2009567,125"}, {"unit_price": "12,5"}, {"unit_price": "12.50"},
    {"unit_price": "0012.50"}, {"unit_price": "0"}, {"unit_price": "0,00"}, {"unit_price": "-0"},
    {"unit_price": "1,234.50"}, {"unit_price": "1,2,3"}, {"unit_price": "1.234,50"}, {"unit_price": "1e3"},
    {"unit_price": "1E-7"}, {"unit_price": ".5"}, {"unit_price": "5."}, {"unit_price": "-5"},
    {"unit_price": "\u22125"}, {"unit_price": "+5"}, {"unit_price": "abc"}, {"unit_price": ""},
    {"unit_price": "NaN"}, {"unit_price": "999999999999999"}, {"unit_price": "1000000000000000"},
    {"unit_price": "0000000000000000001"}, {"unit_price": "1." + "0" * 20}, {"unit_price": "1." + "0" * 21},
    {"unit_price": "12 34"}, {"unit_price": "1  234"}, {"unit_price": " 15,5 "}, {"unit_price": "\u0663\u0664"},
    {"unit_price": "1 234 567 890 123 456"},
    {"buy_price": "1 000,5"}, {"buy_price": "-1"}, {"sale_price": "x"}, {"unit_calc_price": "2,5"},
    {"unit_calc_weight_kg": "2,5"}, {"unit_calc_weight_kg": "-2"}, {"unit_calc_weight_kg": "тонна"},
    {"count": "12"}, {"count": "12,0"}, {"count": "12,5"}, {"count": "1 000"}, {"count": "-3"},
    {"count": "2147483647"}, {"count": "2147483648"}, {"count": "999999999"}, {"count": "0"},
    {"date_price_change": "1.2.2024"}, {"date_price_change": "29.02.2024"}, {"date_price_change": "29.02.2023"},
    {"date_price_change": "31.04.2024"}, {"date_price_change": "2024-02-29"}, {"date_price_change": "2024-02-30"},
    {"date_price_change": "00.01.2024"}, {"date_price_change": "01.13.2024"}, {"date_price_change": "01.01.0000"},
    {"date_price_change": "2024/01/15"}, {"date_price_change": " 15.11.2024 "}, {"date_price_change": "15.11.24"},
    {"unit_price_currency": "rub"}, {"unit_price_currency": "Rub"}, {"unit_price_currency": "руб."},
    {"unit_price_currency": "РУБ"}, {"unit_price_currency": "₽"}, {"unit_price_currency": "$"},
    {"unit_price_currency": "XYZ"}, {"unit_price_currency": "рубли"}, {"unit_price_currency": " USD "},
    {"unit_price_currency": "USD", "buy_price_currency": "EUR"},
    {"unit_price_currency": "USD", "buy_price_currency": "USD"},
    {"unit_price_currency": "USD", "buy_price": "", "buy_price_currency": "EUR"},
    {"sale_price_currency": "usd"}, {"sale_price_currency": "RUR"}, {"sale_price_currency": "ZZZ"},
    {"name": ""}, {"name": "  "}, {"name": " Цемент  М500 "}, {"name": "\u00a0Цемент\u00a0"},
    {"name": "\u3000Гипс\u2003"}, {"name": "Кирпич; красный, \"лицевой\""}, {"name": "Две\nстроки"},
    {"name": "Ёмкость"}, {"name": "x" * 700},
    {"sku": ""}, {"sku": " SKU-1 "}, {"use_category": "  "}, {"unit": "м3"}, {"unit": "куб.м"}, {"unit": "ящ-xyz"},
    {"unit": "", "calc_unit": ""}, {"unit": "", "calc_unit": "кг"}, {"sku": "", "name": "цемент   м500"},
    {"calc_unit": ""}, {"description": "\t описание \t"},
]  # fmt: skip
_PLAIN = {
    "name": "Цемент М500", "sku": "C-1", "use_category": "Цемент", "unit": "шт", "unit_price": "450,00",
    "unit_price_currency": "RUB", "unit_calc_price": "", "unit_calc_price_currency": "", "buy_price": "400",
    "buy_price_currency": "RUB", "sale_price": "500.5", "sale_price_currency": "RUB", "calc_unit": "шт",
    "count": "5", "date_price_change": "15.11.2024", "unit_calc_weight_kg": "", "note": "", "description": "",
}  # fmt: skip


def tricky_csv(path: Path, *, delimiter: str = ",", encoding: str = "utf-8") -> Path:
    """TRICKY_CELLS as a CSV file (rows whose text the encoding cannot hold left out), with blank
    lines, a record of empty fields, and records of the wrong width among them."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(TRICKY_HEADER)
    for i, cells in enumerate(TRICKY_CELLS):
        row = [{**_PLAIN, "sku": f"C-{i}", **cells}[column] for column in TRICKY_HEADER]
        line = io.StringIO(newline="")
        csv.writer(line, delimiter=delimiter, lineterminator="\r\n").writerow(row)
        try:
            line.getvalue().encode(encoding)
        except UnicodeEncodeError:
            continue
        out.write(line.getvalue())
        if i % 10 == 3:
            out.write("\r\n" + delimiter * (len(TRICKY_HEADER) - 1) + "\r\n")
    # A NUL in the first 64 KB makes the file binary: those rows come after the padding.
    for i in range(800):
        writer.writerow([{**_PLAIN, "sku": f"P-{i}", "unit_price": f"{i} 000,{i % 100:02d}"}[c] for c in TRICKY_HEADER])
    for cells in ({"name": "Ц\x00емент"}, {"note": "примечание\x00"}, {"unit_price": "1\x002"}):
        writer.writerow([{**_PLAIN, **cells}[column] for column in TRICKY_HEADER])
    writer.writerow(["Короткая строка", "S-1", "Цемент"])
    writer.writerow([_PLAIN[c] for c in TRICKY_HEADER] + ["", " "])
    writer.writerow([_PLAIN[c] for c in TRICKY_HEADER] + ["лишнее"])
    path.write_bytes(out.getvalue().encode(encoding))
    return path


def _comparable(record: tuple[object, ...]) -> tuple[object, ...]:
    """A staging record with its numbers as the numeric SQL_NUMBER makes of them (value and scale)."""
    cells = dict(zip(STAGING_FIELDS, record, strict=True))
    for field in STAGING_NUMBERS:
        if cells[field] is not None:
            text = str(cells[field]).translate({ord(c): None for c in " \u00a0\u202f\u2009"}).replace(",", ".")
            number = Decimal(text)
            cells[field] = (number, number.as_tuple().exponent)
    return tuple(cells.values())


def assert_staging_agrees(path: Path) -> list[tuple[object, ...]]:
    """staging_records() of the file is rows() (through staging_record), counters and checksum too."""
    fast, reference = read_price_file(path), read_price_file(path)
    try:
        got = [_comparable(r) for r in fast.staging_records()]
    except PriceFileError as exc:
        with pytest.raises(PriceFileError) as expected:
            list(reference.rows())
        assert str(exc) == str(expected.value)
        return []
    want = [_comparable(staging_record(item)) for item in reference.rows()]
    assert got == want
    assert (fast.row_count, fast.rejected_count, fast.checksum) == (
        reference.row_count, reference.rejected_count, reference.checksum)
    return got


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.iterdir() if p.suffix in (".csv", ".json")))
def test_staging_records_agree_with_rows_on_every_sample(sample: str) -> None:
    try:
        read_price_file(SAMPLES / sample)
    except PriceFileError:
        return  # refused before any row: both ways alike
    assert_staging_agrees(SAMPLES / sample)


@pytest.mark.parametrize(
    ("delimiter", "encoding"),
    [(",", "utf-8"), (";", "utf-8"), ("\t", "utf-8"), (";", "utf-8-sig"), (";", "cp1251"), (",", "cp1251")],
)
def test_staging_records_agree_with_rows_on_tricky_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delimiter: str, encoding: str
) -> None:
    records = assert_staging_agrees(tricky_csv(tmp_path / "tricky.csv", delimiter=delimiter, encoding=encoding))
    assert len(records) > 800 and any(r[0] for r in records) and not all(r[0] for r in records)
    # The common shapes took the fast path: only the other rows met the converters.
    converted = []
    convert = PriceFile._convert

    def counting(line: int, *args: object) -> object:
        converted.append(line)
        return convert(line, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(PriceFile, "_convert", staticmethod(counting))
    fast = read_price_file(tricky_csv(tmp_path / "again.csv", delimiter=delimiter, encoding=encoding))
    prices = {record[6] for record in fast.staging_records()}
    assert {"1234.50", "12.5"} <= prices
    assert 0 < len(converted) < len(records) // 5


def test_staging_records_of_a_file_without_a_valid_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "Цемент,abc,,,,,\n,1,,,,,\n", encoding="utf-8")
    with pytest.raises(PriceFileError, match="no valid row: all 2 rows were rejected"):
        list(read_price_file(path).staging_records())
    pf = read_price_file(path)
    pf.staging_records()
    with pytest.raises(RuntimeError):
        pf.rows()


def test_staging_records_stream_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("name;sku;use_category;unit_price;unit_price_currency;count;date_price_change\n")
        for i in range(100_000):
            out.write(f"Материал {i};SKU{i:07d};Категория {i % 40};{i % 900 + 1} {i % 1000:03d},50;RUB;5;01.02.2024\n")
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_price_file(path).staging_records())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100_000
    assert peak < 30 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
