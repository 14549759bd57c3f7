"""Keyset pagination: opaque cursors, page windows from first/after/last/before, page results."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from backends.sql import Keyset, PageSpec
from resolvers.errors import InvalidArgument

DEFAULT_MAX_PAGE_SIZE = 100


def encode_cursor(kind: str, value: Any, pk: int) -> str:
    """An opaque cursor for the row (value, pk) of an ordering named `kind`."""
    if isinstance(value, datetime):
        value = {"t": value.isoformat()}
    return base64.urlsafe_b64encode(orjson.dumps([kind, value, pk])).decode("ascii")


def decode_cursor(cursor: str, kind: str, field: str) -> Keyset:
    """The keyset position in `cursor`; a cursor from another list or ordering is refused."""
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        cursor_kind, value, pk = decoded
        if isinstance(value, dict):
            value = datetime.fromisoformat(value["t"])
        if not isinstance(pk, int):
            raise ValueError(pk)
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeError, orjson.JSONDecodeError):
        raise InvalidArgument([field], f'"{cursor}" is not a valid cursor') from None
    if cursor_kind != kind:
        raise InvalidArgument(
            [field], f"the cursor belongs to another list or ordering ({cursor_kind}), not to {kind}"
        )
    return Keyset(value, pk)


@dataclass(frozen=True)
class PageWindow:
    """What to read (`spec`, one row more than asked) and how to read the answer back."""

    spec: PageSpec
    size: int
    backward: bool
    has_cursor: bool


def page_window(
    kind: str,
    *,
    sort: str,
    descending: bool,
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
    max_page_size: int = DEFAULT_MAX_PAGE_SIZE,
) -> PageWindow:
    """Validates the Relay arguments and turns them into one keyset read."""
    # `first` has a default in the contract, so it cannot tell us whether the client sent
    # it: last/before, when given, decide the direction and `first` is ignored.
    if last is not None or before is not None:
        size = _checked_size("last", last if last is not None else 20, max_page_size)
        if after is not None:
            raise InvalidArgument(["after"], "after cannot be combined with last/before")
        key = decode_cursor(before, kind, "before") if before is not None else None
        # Backward: read the reversed order from `before`, then flip the rows back.
        spec = PageSpec(sort=sort, descending=not descending, after=key, limit=size + 1)
        return PageWindow(spec, size, backward=True, has_cursor=key is not None)
    size = _checked_size("first", first if first is not None else 20, max_page_size)
    key = decode_cursor(after, kind, "after") if after is not None else None
    spec = PageSpec(sort=sort, descending=descending, after=key, limit=size + 1)
    return PageWindow(spec, size, backward=False, has_cursor=key is not None)


def _checked_size(name: str, value: int, cap: int) -> int:
    if value < 0:
        raise InvalidArgument([name], f"must not be negative (got {value})")
    if value > cap:
        raise InvalidArgument([name], f"must be at most {cap} (got {value}); page through the rest with cursors")
    return value


@dataclass(frozen=True)
class Page:
    """One page of rows in display order, with the Relay page info.

    Cursors are encoded when asked for: most queries read `pageInfo.endCursor` and no
    edge cursor, and encoding 50 of them was a measurable part of a page's cost.
    """

    kind: str
    rows: Sequence[Any]
    has_next_page: bool
    has_previous_page: bool
    # Each row's current prices, when the statement that read the page read them too
    # (backends.catalog CURRENT_PRICE_COLUMNS): material id -> price rows, cheapest first.
    current_prices: Mapping[int, list[Any]] | None = None
    whole_prices: bool = True  # False: those prices hold PRICE_SUMMARY_COLUMNS only

    def cursor(self, index: int) -> str:
        row = self.rows[index]
        return encode_cursor(self.kind, row["sort_key"], row["id"])

    @property
    def start_cursor(self) -> str | None:
        return self.cursor(0) if self.rows else None

    @property
    def end_cursor(self) -> str | None:
        return self.cursor(len(self.rows) - 1) if self.rows else None


def make_page(kind: str, rows: Sequence[Any], window: PageWindow,
              current_prices: Mapping[int, list[Any]] | None = None, whole_prices: bool = True) -> Page:
    """Trims the extra row, restores display order and computes cursors and page info."""
    more = len(rows) > window.size
    rows = list(rows[: window.size])
    if window.backward:
        rows.reverse()
        has_next, has_prev = window.has_cursor, more
    else:
        has_next, has_prev = more, window.has_cursor
    return Page(kind, rows, has_next, has_prev, current_prices, whole_prices)
