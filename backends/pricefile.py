"""Supplier price-list files (CSV, XLSX, JSON) read as a stream of validated rows.

`read_price_file(source)` looks at the file's first bytes, reads the header and the first data
row, and returns a `PriceFile`; whole-file problems found that far (empty file, header only,
required column missing, undecodable text, unknown format) raise `PriceFileError` at once.
`PriceFile.rows()` then yields, in file order, one `PriceRow` per valid row and one `RowError`
per rejected row, holding only the current row in memory; a problem that makes the rest of the
file unreadable (bad bytes further on, broken JSON) or a file without a single valid row raises
`PriceFileError` from the iteration. The counters and the sha256 checksum of the raw bytes are
final once rows() is exhausted.

Columns are the supplier export format (name, sku, use_category, unit_price +
unit_price_currency, unit_calc_price, buy_price, sale_price, each with a currency column,
calc_unit, count, date_price_change, plus unit, unit_calc_coefficient, unit_calc_weight_kg,
unit_calc_volume_m3, unit_quantity, description) and the older short format (name,
use_category, unit, price[, description], where price is unit_price). Headers are matched
case-insensitively; `price`, `category` and `unit_calc` (the names in the supplier's own export)
are read as unit_price, use_category and calc_unit. Other columns are ignored and listed.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Literal

__all__ = [
    "SQL_NUMBER", "STAGING_FIELDS", "PriceFile", "PriceFileError", "PriceRow", "RowError", "read_price_file",
    "staging_record",
]

PREFIX_SIZE = 64 * 1024  # bytes looked at for the format and the encoding
RAW_LIMIT = 500  # characters of a rejected row kept in RowError.raw
_CHUNK = 64 * 1024
_XLSX_SPOOL = 16 * 1024 * 1024  # an XLSX read from a stream is spooled to disk past this size
_MAX_JSON_KEYS = 256  # distinct JSON keys remembered in columns / ignored_columns
_MAX_INT4 = 2**31 - 1

Format = Literal["csv", "xlsx", "json"]


class PriceFileError(ValueError):
    """The whole file is refused; the message says what is wrong and, where it applies, where."""


@dataclass(slots=True)
class PriceRow:
    """One valid price-list row. `line` is the file's line (CSV), sheet row (XLSX) or index + 1 (JSON)."""

    line: int
    name: str
    sku: str | None
    category: str | None
    unit: str | None
    unit_price: Decimal
    currency: str
    calc_unit: str | None
    unit_calc_price: Decimal | None
    buy_price: Decimal | None
    sale_price: Decimal | None
    stock: int | None
    price_date: date | None
    description: str | None
    unit_calc_coefficient: Decimal | None = None
    unit_calc_weight_kg: Decimal | None = None
    unit_calc_volume_m3: Decimal | None = None
    unit_quantity: Decimal | None = None

    def as_tuple(self) -> tuple[Any, ...]:
        """The fields in declaration order (PRICE_ROW_FIELDS), e.g. for a COPY record."""
        return (
            self.line, self.name, self.sku, self.category, self.unit, self.unit_price, self.currency,
            self.calc_unit, self.unit_calc_price, self.buy_price, self.sale_price, self.stock,
            self.price_date, self.description, self.unit_calc_coefficient, self.unit_calc_weight_kg,
            self.unit_calc_volume_m3, self.unit_quantity,
        )  # fmt: skip


PRICE_ROW_FIELDS: tuple[str, ...] = tuple(PriceRow.__dataclass_fields__)


@dataclass(slots=True)
class RowError:
    """One rejected row: where, which column (header name as in the file, None if not one), why."""

    line: int
    column: str | None
    message: str
    raw: str


# --------------------------------------------------------------------------- staging records

# The layout of PriceFile.staging_records(): what an import COPYs into its staging table, one
# record per data row, every cell text (or None) so that a row the fast path passes through and
# a row built from a PriceRow look alike. Numbers are plain decimal literals (SQL_NUMBER), dates
# are ISO, currencies are ISO 4217 codes; err_* and raw are set on rejected rows.
STAGING_FIELDS: tuple[str, ...] = (
    "ok", "line", "name", "sku", "category", "unit", "unit_price", "currency", "calc_unit",
    "unit_calc_price", "buy_price", "sale_price", "stock", "price_date", "description",
    "err_column", "err_message", "raw",
)  # fmt: skip
_GROUP_SPACES = " \u00a0\u202f\u2009"  # thousands separators: space, no-break, narrow no-break, thin
# A staging number (text column) as the numeric the parser's Decimal is: same value, same scale.
SQL_NUMBER = "{}::numeric"


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def staging_record(item: PriceRow | RowError) -> tuple[Any, ...]:
    """The staging record (STAGING_FIELDS) of one item of rows()."""
    if type(item) is RowError:
        return (False, item.line, None, None, None, None, None, None, None, None, None, None, None, None, None,
                item.column, item.message, item.raw)  # fmt: skip
    row: PriceRow = item  # type: ignore[assignment]
    return (
        True, row.line, row.name, row.sku, row.category, row.unit, str(row.unit_price), row.currency,
        row.calc_unit, _text_or_none(row.unit_calc_price), _text_or_none(row.buy_price),
        _text_or_none(row.sale_price), _text_or_none(row.stock),
        None if row.price_date is None else row.price_date.isoformat(), row.description, None, None, None,
    )  # fmt: skip


# The number cells the CSV fast path takes (written as plain literals): digits with a decimal
# point or comma, or groups of three digits split by a space-like character, within the range
# _number accepts. Anything else goes through the converters above.
_FAST_NUMBER = re.compile(
    r"[0-9]{1,15}(?:[.,][0-9]{1,20})?|[0-9]{1,3}(?:[" + _GROUP_SPACES + r"][0-9]{3}){1,4}(?:[.,][0-9]{1,20})?"
).fullmatch
_UNGROUP = str.maketrans({**dict.fromkeys(_GROUP_SPACES), ",": "."})


def _fast_number(cell: str) -> str | None:
    """`1 234,50` -> `1234.50` (what _number's Decimal is, as a literal); None if not a common shape."""
    return cell.translate(_UNGROUP) if _FAST_NUMBER(cell) else None


_FAST_COUNT = re.compile(r"[0-9]{1,9}").fullmatch
_FAST_CACHE = 4096  # distinct currency / date spellings remembered by the fast path


# --------------------------------------------------------------------------- values


class _Invalid(Exception):
    """A cell failed validation; becomes a RowError."""

    def __init__(self, column: str | None, reason: str) -> None:
        super().__init__(reason)
        self.column = column
        self.reason = reason


_NUM_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_GROUP_COMMA_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_SPACES = _GROUP_SPACES
_GROUP_SPACE_RE = re.compile(rf"[+-]?\d{{1,3}}(?:[{_SPACES}]\d{{3}})+(?:[.,]\d+)?")
_NON_FINITE = frozenset({"nan", "snan", "inf", "infinity"})
_DMY_RE = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")
_ISO_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def _text(value: Any, column: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    elif isinstance(value, float) and value.is_integer():
        value = str(int(value))
    elif isinstance(value, datetime):
        value = value.date().isoformat() if value.time() == datetime.min.time() else value.isoformat()
    else:
        value = str(value)
    if "\x00" in value:
        raise _Invalid(column, "contains a NUL character")
    return value


def _shown(value: Any) -> str:
    """A cell value quoted in a message."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return json.dumps(text.strip(), ensure_ascii=False)


def _number(value: Any, column: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return None
        if not _NUM_RE.fullmatch(s):
            s = _normalise_number(s, value, column)
        d = Decimal(s)
    elif isinstance(value, bool):
        raise _Invalid(column, f"{_shown(value)} is not a number")
    elif isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise _Invalid(column, f"{_shown(value)} is not a finite number")
        d = Decimal(repr(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise _Invalid(column, f"{_shown(value)} is not a finite number")
        d = value
    else:
        raise _Invalid(column, f"{_shown(value)} is not a number")
    if d and (d.adjusted() >= 15 or d.as_tuple().exponent < -20):  # type: ignore[operator]
        raise _Invalid(column, f"{_shown(value)} is out of range")
    if not d and d.is_signed():
        d = d.copy_abs()
    return d


def _normalise_number(s: str, value: Any, column: str) -> str:
    """`1 234,50`, `1234,5`, `1,234.50`, `−5` -> a Decimal literal, or raise."""
    s = s.replace("\u2212", "-")
    if any(c in s for c in _SPACES):
        if not _GROUP_SPACE_RE.fullmatch(s):
            raise _Invalid(column, f"{_shown(value)} is not a number")
        for c in _SPACES:
            s = s.replace(c, "")
    if "," in s:
        if s.count(",") == 1 and "." not in s:
            s = s.replace(",", ".")
        elif _GROUP_COMMA_RE.fullmatch(s):
            s = s.replace(",", "")
        else:
            raise _Invalid(column, f"{_shown(value)} is not a number")
    if not _NUM_RE.fullmatch(s):
        if s.lower().lstrip("+-") in _NON_FINITE:
            raise _Invalid(column, f"{_shown(value)} is not a finite number")
        raise _Invalid(column, f"{_shown(value)} is not a number")
    return s


def _price(value: Any, column: str) -> Decimal | None:
    d = _number(value, column)
    if d is not None and d < 0:
        raise _Invalid(column, f"negative price {d}")
    return d


def _required_price(value: Any, column: str) -> Decimal:
    d = _price(value, column)
    if d is None:
        raise _Invalid(column, "missing")
    return d


def _required_text(value: Any, column: str) -> str:
    s = _text(value, column)
    if s is None:
        raise _Invalid(column, "missing")
    return s


def _measure(value: Any, column: str) -> Decimal | None:
    d = _number(value, column)
    if d is not None and d < 0:
        raise _Invalid(column, f"negative value {d}")
    return d


def _count(value: Any, column: str) -> int | None:
    d = _number(value, column)
    if d is None:
        return None
    if d != d.to_integral_value():
        raise _Invalid(column, f"{_shown(value)} is not a whole number")
    if d < 0:
        raise _Invalid(column, f"negative stock {int(d)}")
    if d > _MAX_INT4:
        raise _Invalid(column, f"{_shown(value)} is out of range")
    return int(d)


def _date(value: Any, column: str) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return None
        m = _DMY_RE.fullmatch(s)
        parts = (m.group(3), m.group(2), m.group(1)) if m else None
        if parts is None and (m := _ISO_RE.fullmatch(s)):
            parts = (m.group(1), m.group(2), m.group(3))
        if parts is not None:
            try:
                return date(int(parts[0]), int(parts[1]), int(parts[2]))
            except ValueError:
                pass
    raise _Invalid(column, f"{_shown(value)} is not a valid date")


# Active ISO 4217 codes (no funds, metals or test codes).
_ISO_4217 = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN
    BZD CAD CDF CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL
    GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW
    KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN
    NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK
    SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU
    UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL
    """.split()
)
_CURRENCY_ALIASES = {
    "руб": "RUB", "руб.": "RUB", "рубль": "RUB", "рублей": "RUB", "р": "RUB", "р.": "RUB", "₽": "RUB",
    "rur": "RUB",  # the pre-1998 code, still in 1C and YML exports
    "$": "USD", "us$": "USD", "€": "EUR", "₸": "KZT",
}  # fmt: skip
_CODE_RE = re.compile(r"[A-Za-z]{3}")


def _currency(value: Any, column: str) -> str | None:
    s = _text(value, column)
    if s is None:
        return None
    code = _CURRENCY_ALIASES.get(s.lower())
    if code is None and _CODE_RE.fullmatch(s) and s.upper() in _ISO_4217:
        code = s.upper()
    if code is None:
        raise _Invalid(column, f"unknown currency {_shown(s)}")
    return code


# --------------------------------------------------------------------------- columns

Converter = Callable[[Any, str], Any]

# Canonical column -> converter, in the order of the supplier export.
_COLUMNS: dict[str, Converter] = {
    "name": _required_text,
    "sku": _text,
    "use_category": _text,
    "unit": _text,
    "unit_price": _required_price,
    "unit_price_currency": _currency,
    "unit_calc_price": _price,
    "unit_calc_price_currency": _currency,
    "buy_price": _price,
    "buy_price_currency": _currency,
    "sale_price": _price,
    "sale_price_currency": _currency,
    "calc_unit": _text,
    "count": _count,
    "date_price_change": _date,
    "unit_calc_coefficient": _measure,
    "unit_calc_weight_kg": _measure,
    "unit_calc_volume_m3": _measure,
    "unit_quantity": _measure,
    "description": _text,
}
_ALIASES = {"price": "unit_price", "category": "use_category", "unit_calc": "calc_unit"}
_PRICE_CURRENCY = (
    ("unit_calc_price", "unit_calc_price_currency"),
    ("buy_price", "buy_price_currency"),
    ("sale_price", "sale_price_currency"),
)
# The short format (`price` instead of `unit_price`) is name,use_category,unit,price[,description].
_SHORT_FORMAT_REQUIRED = ("use_category", "unit")
_JSON_ARRAY_KEYS = frozenset({"materials", "items", "rows", "products", "prices", "data", "price_list"})


def _normalise_header(name: Any) -> str:
    if name is None:
        return ""
    return str(name).replace("\ufeff", "").strip().strip('"').strip().lower()


def _canonical(header: str) -> str | None:
    if header in _COLUMNS:
        return header
    return _ALIASES.get(header)


# A plan: (canonical column, position or key, header name as in the file, converter).
Plan = list[tuple[str, Any, str, Converter]]


def _header_plan(headers: list[str]) -> tuple[Plan, list[str]]:
    """Positional plan for a CSV/XLSX header; raises PriceFileError if required columns are missing."""
    found: dict[str, tuple[int, str]] = {}
    ignored: list[str] = []
    for index, header in enumerate(headers):
        if not header:
            continue
        canon = _canonical(header)
        if canon is None:
            ignored.append(header)
            continue
        if canon in found:
            other = found[canon][1]
            if other == header:
                raise PriceFileError(
                    f'duplicate column "{header}" (columns {found[canon][0] + 1} and {index + 1})'
                )
            if header == canon:  # unit_price beats price, use_category beats category ...
                ignored.append(other)
                found[canon] = (index, header)
            else:
                ignored.append(header)
            continue
        found[canon] = (index, header)
    listing = ", ".join(h for h in headers if h) or "nothing"
    missing = []
    if "name" not in found:
        missing.append('"name"')
    if "unit_price" not in found:
        missing.append('"unit_price" (or "price")')
    elif found["unit_price"][1] == "price":
        missing += [f'"{c}"' for c in _SHORT_FORMAT_REQUIRED if c not in found]
    if missing:
        what = "column" if len(missing) == 1 else "columns"
        raise PriceFileError(f"missing required {what} {', '.join(missing)} (found: {listing})")
    plan = [(canon, index, shown, _COLUMNS[canon]) for canon, (index, shown) in found.items()]
    plan.sort(key=lambda item: item[1])
    return plan, ignored


def _build_row(line: int, values: dict[str, Any], names: dict[str, str]) -> PriceRow:
    get = values.get
    currency = get("unit_price_currency") or "RUB"
    for price_col, currency_col in _PRICE_CURRENCY:
        other = get(currency_col)
        if other is not None and other != currency and get(price_col) is not None:
            raise _Invalid(
                names[currency_col], f'currency "{other}" differs from the row\'s currency "{currency}"'
            )
    return PriceRow(
        line=line,
        name=values["name"],
        sku=get("sku"),
        category=get("use_category"),
        unit=get("unit"),
        unit_price=values["unit_price"],
        currency=currency,
        calc_unit=get("calc_unit"),
        unit_calc_price=get("unit_calc_price"),
        buy_price=get("buy_price"),
        sale_price=get("sale_price"),
        stock=get("count"),
        price_date=get("date_price_change"),
        description=get("description"),
        unit_calc_coefficient=get("unit_calc_coefficient"),
        unit_calc_weight_kg=get("unit_calc_weight_kg"),
        unit_calc_volume_m3=get("unit_calc_volume_m3"),
        unit_quantity=get("unit_quantity"),
    )


def _clip(raw: str) -> str:
    return raw[:RAW_LIMIT].replace("\x00", "\ufffd")


# --------------------------------------------------------------------------- byte streams


class _HashingReader(io.RawIOBase):
    """The bytes already read (prefix) then the rest of the source, hashed as they pass."""

    def __init__(self, prefix: bytes, rest: BinaryIO, hasher: Any, *, skip: int = 0) -> None:
        super().__init__()
        hasher.update(prefix)
        self._prefix = memoryview(prefix)[skip:]
        self._pos = 0
        self._rest = rest
        self._hasher = hasher
        self.exhausted = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._pos < len(self._prefix):
            n = min(len(buffer), len(self._prefix) - self._pos)
            buffer[:n] = self._prefix[self._pos : self._pos + n]
            self._pos += n
            return n
        if self.exhausted:
            return 0
        data = self._rest.read(len(buffer))
        if not data:
            self.exhausted = True
            return 0
        self._hasher.update(data)
        n = len(data)
        buffer[:n] = data
        return n

    def drain(self) -> None:
        """Hash whatever the parser left unread."""
        self._pos = len(self._prefix)
        while not self.exhausted:
            data = self._rest.read(_CHUNK)
            if not data:
                self.exhausted = True
            else:
                self._hasher.update(data)


def _read_prefix(stream: BinaryIO) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < PREFIX_SIZE:
        data = stream.read(PREFIX_SIZE - size)
        if not data:
            break
        if not isinstance(data, bytes | bytearray):
            raise TypeError("read_price_file needs a binary stream (open the file with 'rb')")
        parts.append(bytes(data))
        size += len(data)
    return b"".join(parts)


_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _detect(prefix: bytes, filename: str | None) -> tuple[Format, str | None]:
    """(format, encoding for text formats) from the first bytes; the filename is only a hint."""
    suffix = Path(filename).suffix.lower() if filename else ""
    if prefix.startswith(b"PK\x03\x04"):
        return "xlsx", None
    if prefix.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        raise PriceFileError(
            "unknown format: this is a legacy Excel .xls (OLE2) file; save it as .xlsx or CSV"
        )
    encoding = None
    body = prefix
    for bom, name in _BOMS:
        if prefix.startswith(bom):
            encoding, body = name, prefix[len(bom) :]
            break
    if encoding == "utf-16":
        return "csv", encoding
    stripped = body.lstrip(b" \t\r\n")
    if not stripped:
        raise PriceFileError("empty file")
    if stripped[:1] in (b"[", b"{"):
        return "json", "utf-8"
    if suffix in (".xlsx", ".xlsm"):
        raise PriceFileError(f'unknown format: "{filename}" is named as XLSX but is not a zip (XLSX) file')
    if suffix == ".json":
        raise PriceFileError(
            f'unknown format: "{filename}" is named as JSON but does not start with "[" or "{{"'
        )
    if b"\x00" in body:
        raise PriceFileError("unknown format: binary data (expected CSV, XLSX or JSON)")
    return "csv", encoding


def _decode_prefix(prefix: bytes, complete: bool, encoding: str | None) -> tuple[str, str]:
    """(encoding, decoded prefix): the BOM's, else UTF-8 if the prefix is valid UTF-8, else cp1251."""
    candidates = [encoding] if encoding else ["utf-8", "cp1251"]
    for name in candidates:
        try:
            return name, codecs.getincrementaldecoder(name)("strict").decode(prefix, final=complete)
        except UnicodeDecodeError as exc:
            last = exc
    line = prefix[: last.start].count(b"\n") + 1
    raise PriceFileError(f"line {line}: undecodable text (not UTF-8 or cp1251): {last.reason}")


def _detect_delimiter(text: str) -> tuple[str, bool]:
    """(delimiter, whether the first line is Excel's `sep=X`) from the header line."""
    lines = (line for line in text.splitlines() if line.strip())
    first = next(lines, "")
    if re.fullmatch(r'"?sep=(.)"?', first.strip()):
        return first.strip().strip('"')[4], True
    counts = {",": 0, ";": 0, "\t": 0}
    quoted = False
    for c in first:
        if c == '"':
            quoted = not quoted
        elif not quoted and c in counts:
            counts[c] += 1
    best = ","
    for delimiter in (";", "\t"):
        if counts[delimiter] > counts[best]:
            best = delimiter
    return best, False


_UNDECODED_RE = re.compile("[\udc80-\udcff]")  # bytes kept by errors="surrogateescape"


class _LineTap:
    """Feeds csv.reader physical lines, counting them and keeping those of the current record.

    The text is decoded with errors="surrogateescape" so that a bad byte is reported with the
    line it is on rather than where the decoder's chunk began.
    """

    __slots__ = ("buf", "encoding", "lines", "source")

    def __init__(self, source: Iterator[str], encoding: str) -> None:
        self.source = source
        self.encoding = encoding
        self.lines = 0
        self.buf: list[str] = []

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = next(self.source)
        self.lines += 1
        if _UNDECODED_RE.search(line):
            raise PriceFileError(
                f"line {self.lines}: bytes not valid in {self.encoding} (the encoding was detected "
                "from the start of the file)"
            )
        self.buf.append(line)
        return line


def _blank(values: Any) -> bool:
    for v in values:
        if v is not None and (not isinstance(v, str) or v.strip()):
            return False
    return True


# --------------------------------------------------------------------------- the file


class PriceFile:
    """A price-list file opened by read_price_file; iterate rows() once."""

    format: Format
    encoding: str | None
    delimiter: str | None
    filename: str | None
    columns: list[str]
    ignored_columns: list[str]
    row_count: int
    rejected_count: int

    def __init__(self, *, fmt: Format, filename: str | None, hasher: Any, closers: list[Any]) -> None:
        self.format = fmt
        self.filename = filename
        self.encoding = None
        self.delimiter = None
        self.columns = []
        self.ignored_columns = []
        self.row_count = 0
        self.rejected_count = 0
        self._hasher = hasher
        self._checksum: str | None = None
        self._closers = closers
        self._records: Iterator[tuple[int, Any, Callable[[], str]]] | None = None
        self._plan: Plan = []
        self._names: dict[str, str] = {}
        self._json_plans: dict[tuple[str, ...], tuple[Plan, dict[str, str]]] = {}
        self._started = False
        self._reader: _HashingReader | None = None
        self._tap: _LineTap | None = None
        self._first_error: RowError | None = None

    # -- public

    @property
    def checksum(self) -> str:
        """sha256 (hex) of the file's bytes; known once the whole file has been read (after rows())."""
        if self._checksum is None:
            raise RuntimeError("the checksum is known once rows() has been iterated to the end")
        return self._checksum

    def rows(self) -> Iterator[PriceRow | RowError]:
        """PriceRow or RowError per data row in file order; raises PriceFileError if no row is valid."""
        if self._started:
            raise RuntimeError("rows() can be iterated only once")
        self._started = True
        return self._rows()

    __iter__ = rows

    def close(self) -> None:
        for closer in self._closers:
            try:
                closer()
            except Exception:
                pass
        self._closers = []

    def __enter__(self) -> PriceFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<PriceFile {self.format} {self.filename or ''} encoding={self.encoding} "
            f"delimiter={self.delimiter!r} columns={self.columns}>"
        )

    # -- iteration

    def _rows(self) -> Iterator[PriceRow | RowError]:
        assert self._records is not None
        try:
            for line, record, raw in self._records:
                try:
                    if self.format == "json":
                        item = self._convert_json(line, record)
                    else:
                        item = self._convert(line, record, self._plan, self._names)
                except _Invalid as bad:
                    item = self._reject(line, bad, raw)
                if type(item) is PriceRow:
                    self.row_count += 1
                else:
                    self.rejected_count += 1
                    if self._first_error is None:
                        self._first_error = item  # type: ignore[assignment]
                yield item
            self._finish()
        finally:
            self.close()
        self._check_some_valid()

    def _check_some_valid(self) -> None:
        if self.row_count == 0:
            first = self._first_error
            detail = f" (first: line {first.line}: {first.message})" if first else ""
            raise PriceFileError(f"no valid row: all {self.rejected_count} rows were rejected{detail}")

    def _reject(self, line: int, bad: _Invalid, raw: Callable[[], str]) -> RowError:
        return RowError(line, bad.column, f"{bad.column}: {bad.reason}" if bad.column else bad.reason, _clip(raw()))

    def staging_records(self) -> Iterator[tuple[Any, ...]]:
        """rows() as staging records (STAGING_FIELDS), for an import's COPY; iterate once.

        A CSV row whose cells are all in their common shapes (plain or grouped decimal numbers,
        known currency codes and dates, no NUL) is passed through without building Decimals
        and dates; any other row, and every row of XLSX and JSON, goes through the same
        converters as rows(). The counters, checksum and errors are those of rows()."""
        if self.format != "csv":
            return map(staging_record, self.rows())
        if self._started:
            raise RuntimeError("rows() can be iterated only once")
        self._started = True
        return self._fast_csv()

    def _fast_csv(self) -> Iterator[tuple[Any, ...]]:
        assert self._records is not None and self._tap is not None
        plan, names, tap = self._plan, self._names, self._tap
        where = {canon: key for canon, key, _, _ in plan}
        # Position of each column in a record; a column the file lacks reads the "" appended.
        (i_name, i_sku, i_category, i_unit, i_price, i_currency, i_calc_price, i_calc_currency, i_buy,
         i_buy_currency, i_sale, i_sale_currency, i_calc_unit, i_count, i_date, i_coefficient, i_weight,
         i_volume, i_quantity, i_description) = (where.get(canon, -1) for canon in _COLUMNS)  # fmt: skip
        number, whole = _fast_number, _FAST_COUNT
        currencies: dict[str, str] = {}
        dates: dict[str, str] = {}

        def currency_of(cell: str) -> str | None:
            code = currencies.get(cell)
            if code is None:
                try:
                    code = _currency(cell, "")
                except _Invalid:
                    return None
                if len(currencies) < _FAST_CACHE:
                    currencies[cell] = code  # type: ignore[assignment]
            return code

        def date_of(cell: str) -> str | None:
            iso = dates.get(cell)
            if iso is None:
                try:
                    day = _date(cell, "")
                except _Invalid:
                    return None
                iso = day.isoformat()  # type: ignore[union-attr]
                if len(dates) < _FAST_CACHE:
                    dates[cell] = iso
            return iso

        measures = [i for i in (i_coefficient, i_weight, i_volume, i_quantity) if i >= 0]

        def fast(line: int, f: list[str]) -> tuple[Any, ...] | None:
            """The staging record of a row whose cells are all in their common shapes, else None."""
            name = f[i_name].strip()
            price = number(f[i_price].strip())
            if not name or price is None:
                return None
            calc_price = f[i_calc_price].strip()
            if calc_price and (calc_price := number(calc_price)) is None:  # type: ignore[assignment]
                return None
            buy = f[i_buy].strip()
            if buy and (buy := number(buy)) is None:  # type: ignore[assignment]
                return None
            sale = f[i_sale].strip()
            if sale and (sale := number(sale)) is None:  # type: ignore[assignment]
                return None
            for i in measures:
                cell = f[i].strip()
                if cell and number(cell) is None:
                    return None
            count = f[i_count].strip()
            if count and not whole(count):
                return None
            day = f[i_date].strip()
            if day:
                day = dates.get(day) or date_of(day)
                if day is None:
                    return None
            cell = f[i_currency].strip()
            currency = "RUB"
            if cell:
                currency = currencies.get(cell) or currency_of(cell)
                if currency is None:
                    return None
            for value, i in ((calc_price, i_calc_currency), (buy, i_buy_currency), (sale, i_sale_currency)):
                cell = f[i].strip()
                if cell:
                    code = currencies.get(cell) or currency_of(cell)
                    if code is None or (value and code != currency):
                        return None
            return (
                True, line, name, f[i_sku].strip() or None, f[i_category].strip() or None,
                f[i_unit].strip() or None, price, currency, f[i_calc_unit].strip() or None, calc_price or None,
                buy or None, sale or None, count or None, day or None, f[i_description].strip() or None,
                None, None, None,
            )  # fmt: skip

        buf = tap.buf
        try:
            for line, fields, raw in self._records:
                if type(fields) is list and not (
                    "\x00" in buf[0] if len(buf) == 1 else any("\x00" in physical for physical in buf)
                ):
                    fields.append("")
                    record = fast(line, fields)
                    if record is not None:
                        self.row_count += 1
                        yield record
                        continue
                    fields.pop()
                try:
                    item: PriceRow | RowError = self._convert(line, fields, plan, names)
                    self.row_count += 1
                except _Invalid as bad:
                    item = self._reject(line, bad, raw)
                    self.rejected_count += 1
                    if self._first_error is None:
                        self._first_error = item
                yield staging_record(item)
            self._finish()
        finally:
            self.close()
        self._check_some_valid()

    def _finish(self) -> None:
        if self._reader is not None:
            self._reader.drain()
        if self._checksum is None:
            self._checksum = self._hasher.hexdigest()

    @staticmethod
    def _convert(line: int, record: Any, plan: Plan, names: dict[str, str]) -> PriceRow:
        values = {}
        for canon, key, shown, convert in plan:
            values[canon] = convert(record[key], shown)
        return _build_row(line, values, names)

    def _convert_json(self, line: int, record: Any) -> PriceRow:
        if not isinstance(record, dict):
            raise _Invalid(None, f"row is a JSON {type(record).__name__}, not an object")
        keys = tuple(record)
        cached = self._json_plans.get(keys)
        if cached is None:
            cached = self._json_plan(keys)
        plan, names = cached
        values = {}
        for canon, key, shown, convert in plan:
            values[canon] = convert(record.get(key), shown)
        return _build_row(line, values, names)

    def _json_plan(self, keys: tuple[str, ...]) -> tuple[Plan, dict[str, str]]:
        found: dict[str, str] = {}
        for key in keys:
            header = _normalise_header(key)
            canon = _canonical(header)
            if len(self.columns) < _MAX_JSON_KEYS and header not in self.columns:
                self.columns.append(header)
                if canon is None:
                    self.ignored_columns.append(header)
            if canon is not None and (canon not in found or header == canon):
                found[canon] = key
        plan: Plan = [(canon, key, _normalise_header(key), _COLUMNS[canon]) for canon, key in found.items()]
        if "name" not in found:
            plan.insert(0, ("name", "name", "name", _required_text))
        if "unit_price" not in found:
            plan.append(("unit_price", "unit_price", "unit_price", _required_missing_price))
        names = {canon: shown for canon, _, shown, _ in plan}
        for canon in _COLUMNS:
            names.setdefault(canon, canon)
        if len(self._json_plans) > 64:
            self._json_plans.clear()
        self._json_plans[keys] = (plan, names)
        return plan, names


def _required_missing_price(value: Any, column: str) -> Decimal:
    raise _Invalid(column, 'missing (the row has no "unit_price" or "price")')


# --------------------------------------------------------------------------- opening


def read_price_file(source: str | Path | BinaryIO, *, filename: str | None = None) -> PriceFile:
    """Open a price list (path or binary stream), check its header and first row, return a PriceFile.

    Raises PriceFileError for a file that cannot be used at all. The file is read as rows() is
    iterated; a stream passed in is read from its current position and is not closed.
    """
    closers: list[Any] = []
    if isinstance(source, str | Path):
        path = Path(source)
        filename = filename or path.name
        try:
            stream: BinaryIO = open(path, "rb")
        except OSError as exc:
            raise PriceFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
        closers.append(stream.close)
        owned = True
    else:
        stream = source
        owned = False
        if filename is None and isinstance(getattr(source, "name", None), str):
            filename = Path(source.name).name
    try:
        try:
            prefix = _read_prefix(stream)
        except OSError as exc:
            raise PriceFileError(f"cannot read the file: {exc}") from exc
        if not prefix:
            raise PriceFileError("empty file")
        fmt, encoding = _detect(prefix, filename)
        hasher = hashlib.sha256()
        result = PriceFile(fmt=fmt, filename=filename, hasher=hasher, closers=closers)
        if fmt == "xlsx":
            _open_xlsx(result, prefix, stream, owned, hasher)
        elif fmt == "json":
            _open_json(result, prefix, stream, hasher)
        else:
            _open_csv(result, prefix, stream, encoding, hasher)
        return result
    except BaseException:
        for closer in closers:
            closer()
        raise


def _use_header(pf: PriceFile, headers: list[str], where: str) -> int:
    """Sets the file's columns and row plan from its header; returns the header's width.
    A header missing a required column is refused, saying where the header is."""
    pf.columns = [h for h in headers if h]
    try:
        pf._plan, pf.ignored_columns = _header_plan(headers)
    except PriceFileError as exc:
        raise PriceFileError(f"{where}: {exc}") from None
    pf._names = _names_of(pf._plan)
    return len(headers)


def _open_csv(pf: PriceFile, prefix: bytes, stream: BinaryIO, encoding: str | None, hasher: Any) -> None:
    complete = len(prefix) < PREFIX_SIZE
    encoding, text = _decode_prefix(prefix, complete, encoding)
    if not text.strip(" \t\r\n\ufeff"):
        raise PriceFileError("empty file")
    delimiter, sep_line = _detect_delimiter(text.lstrip("\ufeff"))
    pf.encoding, pf.delimiter = encoding, delimiter
    reader = _HashingReader(prefix, stream, hasher)
    pf._reader = reader
    textio = io.TextIOWrapper(
        io.BufferedReader(reader, _CHUNK), encoding=encoding, errors="surrogateescape", newline=""
    )
    tap = _LineTap(iter(textio), encoding)
    pf._tap = tap
    records = csv.reader(tap, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)

    def read() -> tuple[int, list[str]] | None:
        """(start line, fields) of the next non-blank record, or None at the end."""
        while True:
            tap.buf.clear()
            start = tap.lines + 1
            try:
                fields = next(records)
            except StopIteration:
                return None
            except UnicodeDecodeError as exc:
                raise PriceFileError(
                    f"line {tap.lines + 1}: undecodable bytes for {encoding} (the encoding was taken from "
                    f"the start of the file): {exc.reason}"
                ) from exc
            except csv.Error as exc:
                raise PriceFileError(f"line {start}: {exc} (an unclosed quote?)") from exc
            if fields and not _blank(fields):
                return start, fields

    if sep_line:
        while next(tap).strip() == "":
            pass
    header = read()
    if header is None:
        raise PriceFileError("empty file")
    header_line, header_fields = header
    width = _use_header(pf, [_normalise_header(h) for h in header_fields], f"line {header_line}")
    first = read()
    if first is None:
        raise PriceFileError(f"no data rows: the file has only a header (line {header_line})")

    def raw() -> str:
        return "".join(tap.buf).rstrip("\r\n")

    def generate() -> Iterator[tuple[int, Any, Callable[[], str]]]:
        item: tuple[int, list[str]] | None = first
        while item is not None:
            line, fields = item
            if len(fields) != width and not (len(fields) > width and _blank(fields[width:])):
                yield line, _WrongWidth(width, len(fields)), raw
            else:
                yield line, fields, raw
            item = read()

    pf._records = generate()


class _WrongWidth:
    """A CSV record with the wrong number of fields: fails on first access."""

    __slots__ = ("found", "width")

    def __init__(self, width: int, found: int) -> None:
        self.width, self.found = width, found

    def __getitem__(self, index: int) -> Any:
        raise _Invalid(None, f"expected {self.width} fields, found {self.found}")


def _names_of(plan: Plan) -> dict[str, str]:
    names = {canon: canon for canon in _COLUMNS}
    names.update({canon: shown for canon, _, shown, _ in plan})
    return names


def _open_json(pf: PriceFile, prefix: bytes, stream: BinaryIO, hasher: Any) -> None:
    import ijson

    pf.encoding = "utf-8"
    skip = len(codecs.BOM_UTF8) if prefix.startswith(codecs.BOM_UTF8) else 0
    reader = _HashingReader(prefix, stream, hasher, skip=skip)
    pf._reader = reader
    buffered = io.BufferedReader(reader, _CHUNK)
    events = ijson.parse(buffered, use_float=False)
    position = 0

    def items() -> Iterator[Any]:
        nonlocal position
        try:
            yield from _json_items(events)
        except ijson.JSONError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PriceFileError(f"invalid JSON after row {position}: {reason}") from exc
        except UnicodeDecodeError as exc:
            raise PriceFileError(f"invalid JSON after row {position}: not UTF-8 ({exc.reason})") from exc

    source = items()
    first = next(source, None)
    if first is None:
        raise PriceFileError("no data rows: the JSON array is empty")

    def generate() -> Iterator[tuple[int, Any, Callable[[], str]]]:
        nonlocal position
        item: Any = first
        while True:
            position += 1
            record = item
            yield position, record, lambda record=record: json.dumps(record, ensure_ascii=False, default=str)
            try:
                item = next(source)
            except StopIteration:
                return

    pf._records = generate()


def _json_items(events: Iterator[tuple[str, str, Any]]) -> Iterator[Any]:
    """The elements of the top-level array, or of the rows array of a top-level object."""
    from ijson.common import ObjectBuilder

    first = next(events, None)
    if first is None:
        raise PriceFileError("empty file")
    if first[1] == "start_array":
        key = ""
    elif first[1] == "start_map":
        key = None
        for prefix, event, value in events:
            if prefix == "" and event == "map_key" and str(value).lower() in _JSON_ARRAY_KEYS:
                _, following, _ = next(events)
                if following == "start_array":
                    key = value
                    break
        if key is None:
            names = ", ".join(f'"{k}"' for k in sorted(_JSON_ARRAY_KEYS))
            raise PriceFileError(
                f"JSON object without an array of rows (expected a top-level array or one of {names})"
            )
    else:
        raise PriceFileError("JSON is neither an array of rows nor an object holding one")
    item_prefix = f"{key}.item" if key else "item"
    builder = None
    for prefix, event, value in events:
        if prefix == key and event == "end_array":
            return
        if builder is None:
            builder = ObjectBuilder()
        builder.event(event, value)
        if prefix == item_prefix and event not in ("start_map", "start_array", "map_key"):
            yield builder.value
            builder = None


def _open_xlsx(pf: PriceFile, prefix: bytes, stream: BinaryIO, owned: bool, hasher: Any) -> None:
    import openpyxl

    hasher.update(prefix)
    if owned:
        for data in iter(lambda: stream.read(_CHUNK), b""):
            hasher.update(data)
        stream.seek(0)
        workbook_file: Any = stream
    else:
        spool = tempfile.SpooledTemporaryFile(max_size=_XLSX_SPOOL)
        pf._closers.append(spool.close)
        spool.write(prefix)
        for data in iter(lambda: stream.read(_CHUNK), b""):
            hasher.update(data)
            spool.write(data)
        spool.seek(0)
        workbook_file = spool
    pf._checksum = hasher.hexdigest()
    try:
        workbook = openpyxl.load_workbook(workbook_file, read_only=True, data_only=True)
    except Exception as exc:
        raise PriceFileError(f"unreadable XLSX file: {exc}") from exc
    pf._closers.insert(0, workbook.close)
    if not workbook.worksheets:
        raise PriceFileError("unreadable XLSX file: the workbook has no worksheet")
    sheet = workbook.worksheets[0]
    if hasattr(sheet, "reset_dimensions"):
        sheet.reset_dimensions()  # the stored dimension may be wrong; read what is there
    rows = enumerate(sheet.iter_rows(values_only=True), start=1)

    def read() -> tuple[int, tuple[Any, ...]] | None:
        try:
            for number, values in rows:
                if values and not _blank(values):
                    return number, values
        except Exception as exc:
            raise PriceFileError(f"unreadable XLSX sheet {sheet.title!r}: {exc}") from exc
        return None

    header = read()
    if header is None:
        raise PriceFileError(f"empty file: the first sheet {sheet.title!r} has no rows")
    header_line, header_values = header
    headers = [_normalise_header(h) for h in header_values]
    while headers and not headers[-1]:
        headers.pop()
    width = _use_header(pf, headers, f"row {header_line}")
    first = read()
    if first is None:
        raise PriceFileError(f"no data rows: the sheet {sheet.title!r} has only a header (row {header_line})")

    def generate() -> Iterator[tuple[int, Any, Callable[[], str]]]:
        item: tuple[int, tuple[Any, ...]] | None = first
        while item is not None:
            number, values = item
            if len(values) < width:
                values = values + (None,) * (width - len(values))
            cells = values
            yield (
                number,
                cells,
                lambda cells=cells: "\t".join("" if v is None else str(v) for v in cells).rstrip("\t"),
            )
            item = read()

    pf._records = generate()
