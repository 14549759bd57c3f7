"""Shared batching shapes: rows by key in key order, and one page per scope for a group of scopes."""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from strawberry.dataloader import DataLoader

K = TypeVar("K", bound=Hashable)
A = TypeVar("A", bound=Hashable)


def rows_in_key_order(keys: Sequence[K], rows: Sequence[asyncpg.Record], column: str) -> list[asyncpg.Record | None]:
    """One row per key, in key order, None for a key with no row."""
    by_key = {r[column]: r for r in rows}
    return [by_key.get(k) for k in keys]


def groups_in_key_order(keys: Sequence[K], rows: Sequence[asyncpg.Record], column: str) -> list[list[asyncpg.Record]]:
    """All rows per key (in the rows' order), in key order, [] for a key with none."""
    by_key: dict[Any, list[asyncpg.Record]] = defaultdict(list)
    for r in rows:
        by_key[r[column]].append(r)
    return [by_key.get(k, []) for k in keys]


async def scoped_pages(
    keys: Sequence[tuple[int, A]],
    fetch: Callable[[list[int], A], Awaitable[Sequence[asyncpg.Record]]],
) -> list[list[asyncpg.Record]]:
    """Answers (scope id, page arguments) keys with one statement per distinct arguments.

    Sibling connections in one query (every category's `materials(first: 5)`) share their
    arguments, so a whole nesting level costs one round trip.
    """
    scopes_by_args: dict[A, list[int]] = defaultdict(list)
    for scope_id, args in keys:
        if scope_id not in scopes_by_args[args]:
            scopes_by_args[args].append(scope_id)
    groups = list(scopes_by_args.items())
    results = await asyncio.gather(*(fetch(scopes, args) for args, scopes in groups))
    pages: dict[tuple[int, A], list[asyncpg.Record]] = defaultdict(list)
    for (args, _), rows in zip(groups, results, strict=True):
        for r in rows:
            pages[(r["scope_id"], args)].append(r)
    return [pages.get(k, []) for k in keys]


@dataclass(frozen=True)
class Companion:
    """Columns of a related row read along with each row, and the loader they fill.

    `build(row)` returns (key, related row) or None when the row has no such relation; the
    related row must hold every column the loader's own query returns (a test checks).
    `key(row)`, when given, is that key alone (None: no relation), so that a page naming one
    category fifty times builds its row once.
    """

    loader: KnownRows
    build: Callable[[Any], tuple[Any, Any] | None]
    key: Callable[[Any], Any] | None = None


_FORGOTTEN = object()


class KnownRows(DataLoader[Any, Any]):
    """A loader that takes rows read along by other statements (`remember`) and puts them in
    its cache only when a key is asked for.

    Priming a DataLoader makes a future per key; a page of 50 materials primed ~120 of them
    (categories, units, current prices, suppliers) per request, and most are never asked
    for: the page's objects already hold those relations (schema.material.material_nodes).
    A remembered row answers `load` (and `schema.prefetch`, through `settle`) exactly as a
    primed one would, without a round trip; as with `prime_many`, a key already in the
    cache keeps its value.
    """

    @property
    def known(self) -> dict[Any, Any]:
        """The remembered rows not yet asked for, those still to be built included."""
        known = self.__dict__.get("_known")
        if known is None:
            known = self.__dict__["_known"] = {}
        later = self.__dict__.get("_later")
        if later:
            self.__dict__["_later"] = []
            for build in later:  # in the order they were remembered: the first row of a key wins
                rows = build()
                for key, value in rows.items():
                    known.setdefault(key, value)
        return known

    def remember(self, rows: Mapping[Any, Any]) -> None:
        if self.batch is not None and not self.batch.dispatched:
            self.prime_many(rows)  # a key waiting in the open batch is answered now, as priming does
            return
        known = self.known
        if not known:
            known.update(rows)
            return
        for key, value in rows.items():
            known.setdefault(key, value)

    def remember_later(self, build: Callable[[], Mapping[Any, Any]]) -> None:
        """Like `remember(build())`, with `build` called only if a key is ever asked for (a
        page's fifty rows need not become related rows nobody reads)."""
        if self.batch is not None and not self.batch.dispatched:
            self.prime_many(build())
            return
        self.__dict__.setdefault("_later", []).append(build)

    def _holds_rows(self) -> bool:
        return bool(self.__dict__.get("_known") or self.__dict__.get("_later"))

    def settle(self, keys: Iterable[Any]) -> None:
        """Moves the remembered rows of `keys` into the cache (primed, as `prime_many` would)."""
        if not self._holds_rows():
            return
        known = self.known
        found = {key: known.pop(key) for key in keys if key in known}
        if found:
            self.prime_many(found)

    def load(self, key: Any) -> Any:
        if self._holds_rows():
            self.settle((key,))
        return super().load(key)

    # A cleared key is forgotten too: a remembered row must not come back after it. (Clearing
    # a key only remembered, not yet in the cache, is not the error it is for an unknown key.)
    def clear(self, key: Any) -> None:
        if self._holds_rows() and self.known.pop(key, _FORGOTTEN) is not _FORGOTTEN and self.cache_map.get(key) is None:
            return
        super().clear(key)

    def clear_many(self, keys: Iterable[Any]) -> None:
        for key in keys:
            self.clear(key)

    def clear_all(self) -> None:
        self.__dict__.pop("_known", None)
        self.__dict__.pop("_later", None)
        super().clear_all()


def prime_companions(rows: Sequence[asyncpg.Record], companions: Sequence[Companion]) -> None:
    """Remembers, in each companion's loader, the related rows read along with `rows` (built
    when a key is first asked for), so the relation they belong to costs no round trip."""
    for companion in companions:
        companion.loader.remember_later(functools.partial(related_rows, rows, companion))


def related_rows(rows: Sequence[asyncpg.Record], companion: Companion) -> dict[Any, Any]:
    """The companion's related rows read along with `rows`, by key (the first of each key)."""
    related: dict[Any, Any] = {}
    build, key_of = companion.build, companion.key
    for row in rows:
        if key_of is not None:
            key = key_of(row)
            if key is None or key in related:
                continue
        built = build(row)
        if built is not None and built[0] not in related:
            related[built[0]] = built[1]
    return related


def category_key(row: Any) -> int | None:
    """The key `category_of(row)` would return, without building the row."""
    return row["category_id"] if row.get("category_name") is not None else None


def unit_key(row: Any) -> str | None:
    return row["unit_code"] if row.get("unit_name") is not None else None


def supplier_key(row: Any) -> int | None:
    return row["supplier_id"] if row["supplier_name"] is not None else None


def category_of(row: Any) -> tuple[int, dict[str, Any]] | None:
    """The category row read along with a material (backends.catalog MATERIAL_COMPANION_COLUMNS)."""
    if row.get("category_name") is None:
        return None
    return row["category_id"], {"id": row["category_id"], "parent_id": row["category_parent_id"],
                                "name": row["category_name"]}


def unit_of(row: Any) -> tuple[str, dict[str, Any]] | None:
    """The unit row read along with a material."""
    if row.get("unit_name") is None:
        return None
    return row["unit_code"], {"code": row["unit_code"], "name": row["unit_name"], "aliases": unit_aliases(row)}


def unit_aliases(row: Any) -> list[str]:
    """The unit's aliases read along with a material (backends.catalog UNIT_COMPANION_COLUMNS)."""
    aliases = row["unit_aliases"]
    return aliases.split("\x1f") if aliases else []


def supplier_of(row: Any) -> tuple[int, dict[str, Any]] | None:
    """The supplier row read along with a price (backends.prices SUPPLIER_COMPANION)."""
    if row["supplier_name"] is None:
        return None
    return row["supplier_id"], {"id": row["supplier_id"], "name": row["supplier_name"]}


def prime_current_prices(
    prices: Mapping[int, list[dict[str, Any]]], current_prices: KnownRows | None, suppliers: KnownRows
) -> None:
    """Remembers, in the current-prices loader (None: not it) and the suppliers loader, the
    prices a page read along and the suppliers they name
    (backends.catalog CatalogReader.material_page_and_prices)."""
    if prices and current_prices is not None:
        current_prices.remember(prices)
    suppliers.remember_later(functools.partial(named_suppliers, prices))


def named_suppliers(prices: Mapping[int, list[dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    """The supplier rows (id, name) named by current prices read along with a page."""
    named: dict[int, dict[str, Any]] = {}
    for found in prices.values():
        for price in found:
            supplier_id = price["supplier_id"]
            if price["supplier_name"] is not None and supplier_id not in named:
                named[supplier_id] = {"id": supplier_id, "name": price["supplier_name"]}
    return named
