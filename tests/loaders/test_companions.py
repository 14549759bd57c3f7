"""Rows primed from companion columns are the rows the loaders would have read themselves."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from backends.catalog import (
    CatalogReader,
    MaterialFilterSpec,
    MaterialReadPlan,
    fold_current_prices,
    material_page_query,
)
from backends.postgres import PostgresBackend
from backends.prices import HistorySpec, PriceReader
from backends.sql import PageSpec
from loaders.base import KnownRows, category_of, prime_current_prices, supplier_of, unit_of
from loaders.registry import RequestLoaders
from tests.catalog_fixtures import small_catalog


async def test_companion_rows_equal_the_loaders_own_rows(empty_catalog: PostgresBackend, conn: asyncpg.Connection) -> None:
    ids = await small_catalog(conn)
    catalog, prices = CatalogReader(empty_catalog), PriceReader(empty_catalog)
    page = await catalog.material_page(MaterialFilterSpec(), PageSpec(limit=50))
    by_id = await catalog.materials_by_ids([r["id"] for r in page])
    current = await prices.current_prices_by_material_ids([r["id"] for r in page])
    assert page and by_id and current

    def same(built: tuple | None, own: asyncpg.Record) -> None:
        assert built is not None
        assert built[1] == dict(own), (built, dict(own))

    for rows in (page, by_id):
        for row in rows:
            (category,) = await catalog.categories_by_ids([row["category_id"]])
            same(category_of(row), category)
            (unit,) = await catalog.units_by_codes([row["unit_code"]])
            same(unit_of(row), unit)
            assert isinstance(unit["aliases"], list) and unit["aliases"]
    for row in current:
        (supplier,) = await catalog.suppliers_by_ids([row["supplier_id"]])
        same(supplier_of(row), supplier)
    history = await prices.history_pages_by_material_ids(
        [ids.materials["cem400"]], HistorySpec(), PageSpec(sort="VALID_FROM", descending=True, limit=5))
    assert history and all(supplier_of(r) is not None for r in history)


async def test_a_material_without_category_primes_nothing(empty_catalog: PostgresBackend, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO materials (name, unit_code) VALUES ('Без категории', 'шт')")
    (row,) = await CatalogReader(empty_catalog).material_page(MaterialFilterSpec(), PageSpec(limit=5))
    assert category_of(row) is None and unit_of(row) is not None



@pytest.mark.parametrize(("timezone", "category"), [("UTC", None), ("Europe/Moscow", None), ("UTC", "binders")])
async def test_current_prices_read_with_a_page_equal_the_loaders_own(
    empty_catalog: PostgresBackend, conn: asyncpg.Connection, timezone: str, category: str | None
) -> None:
    ids = await small_catalog(conn)
    # Without a category the page is found on keys and its rows read after; a category
    # subtree is a merge that reads the rows in its per-category scans.
    spec = MaterialFilterSpec(category_id=ids.categories[category] if category else None)
    sql, args = material_page_query(spec, PageSpec(limit=50), plan=MaterialReadPlan(current_prices=True))
    await conn.execute(f"SET TimeZone = '{timezone}'")
    try:
        page = await conn.fetch(sql, *args)
    finally:
        await conn.execute("RESET TimeZone")
    page, read_along = fold_current_prices(page)
    assert len({r["id"] for r in page}) == len(page)  # one row per material
    catalog, prices = CatalogReader(empty_catalog), PriceReader(empty_catalog)
    assert [r["id"] for r in page] == [r["id"] for r in await catalog.material_page(spec, PageSpec(limit=50))]
    # Both kinds of material: with several current prices, and with none.
    assert max(len(found) for found in read_along.values()) >= 2 and [] in read_along.values()
    loaders = RequestLoaders.build(catalog, prices)
    prime_current_prices(read_along, loaders.current_prices_by_material, loaders.supplier_by_id)
    own = await prices.current_prices_by_material_ids([r["id"] for r in page])
    assert own
    for row in page:
        primed = await loaders.current_prices_by_material.load(row["id"])
        expected = [dict(r) for r in own if r["material_id"] == row["id"]]
        assert primed == expected
        for price in primed:
            assert (await loaders.supplier_by_id.load(price["supplier_id"]))["name"] == price["supplier_name"]


class _Counting(KnownRows):
    """A KnownRows loader over a dict, counting the keys it had to fetch (pure logic)."""

    def __init__(self, rows: dict[int, str]) -> None:
        self.rows, self.fetched = rows, []
        super().__init__(load_fn=self._load)

    async def _load(self, keys: list[int]) -> list[str | None]:
        self.fetched.append(list(keys))
        return [self.rows.get(k) for k in keys]


async def test_remembered_rows_answer_loads_without_fetching() -> None:
    loader = _Counting({1: "db-1", 2: "db-2", 3: "db-3"})
    loader.remember({1: "read-along-1", 2: "read-along-2"})
    assert await loader.load(1) == "read-along-1"
    assert await loader.load_many([2, 3]) == ["read-along-2", "db-3"]
    assert loader.fetched == [[3]]
    # As with priming, a key already loaded keeps its value; a later remember does not replace it.
    loader.remember({3: "stale", 4: "read-along-4"})
    assert await loader.load(3) == "db-3" and await loader.load(4) == "read-along-4"
    assert loader.fetched == [[3]]


async def test_remember_answers_a_key_already_waiting_in_the_open_batch() -> None:
    loader = _Counting({5: "db-5"})
    waiting = loader.load(5)  # queued; the batch is dispatched on the next tick
    loader.remember({5: "read-along-5"})
    assert await waiting == "read-along-5"
    assert loader.fetched == []


async def test_prefetch_reads_remembered_rows() -> None:
    from schema.prefetch import _cached_all, load_all

    loader = _Counting({7: "db-7", 8: "db-8"})
    loader.remember({7: "read-along-7"})
    assert _cached_all(loader, [7]) == ["read-along-7"]
    assert await load_all(loader, [7, 8]) == ["read-along-7", "db-8"]
    assert loader.fetched == [[8]]


async def test_rows_remembered_for_later_are_built_only_when_asked_for() -> None:
    built: list[str] = []

    def rows(name: str, mapping: dict[int, str]) -> Any:
        def build() -> dict[int, str]:
            built.append(name)
            return mapping
        return build

    loader = _Counting({1: "db-1", 9: "db-9"})
    loader.remember_later(rows("page-1", {1: "page-1:1", 2: "page-1:2"}))
    loader.remember_later(rows("page-2", {2: "page-2:2", 3: "page-2:3"}))
    assert built == []  # nobody asked yet
    assert await loader.load_many([2, 3, 9]) == ["page-1:2", "page-2:3", "db-9"]  # the first remembered wins
    assert built == ["page-1", "page-2"] and loader.fetched == [[9]]


async def test_a_cleared_key_is_not_answered_from_remembered_rows() -> None:
    loader = _Counting({1: "db-1", 2: "db-2", 3: "db-3"})
    loader.remember({1: "read-along-1", 2: "read-along-2"})
    loader.remember_later(lambda: {3: "read-along-3"})
    loader.clear(1)
    loader.clear_many([2])
    assert await loader.load_many([1, 2, 3]) == ["db-1", "db-2", "read-along-3"]
    loader.remember({4: "read-along-4"})
    loader.clear_all()
    assert await loader.load(4) is None and loader.fetched == [[1, 2], [4]]
