"""Resolvers for materials, categories, suppliers and units."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from backends.catalog import FULL_ROWS, MaterialFilterSpec, MaterialReadPlan
from loaders.base import prime_companions, prime_current_prices
from resolvers.context import Context
from resolvers.errors import InvalidArgument
from resolvers.ids import decode_id
from resolvers.pagination import Page, make_page, page_window


def filter_spec(flt: Any | None, path: str = "filter") -> MaterialFilterSpec:
    """A MaterialFilter input turned into the backend's spec, with its ids decoded."""
    if flt is None:
        return MaterialFilterSpec()
    if flt.price_min is not None and flt.price_max is not None and flt.price_min > flt.price_max:
        raise InvalidArgument([path, "priceMin"], f"is greater than priceMax ({flt.price_min} > {flt.price_max})")
    currency = (flt.currency or "RUB").strip().upper()
    if len(currency) != 3 or not currency.isalpha():
        raise InvalidArgument([path, "currency"], f'"{flt.currency}" is not an ISO 4217 currency code')
    return MaterialFilterSpec(
        category_id=decode_id(flt.category_id, "Category", [path, "categoryId"]) if flt.category_id else None,
        include_subcategories=flt.include_subcategories is not False,
        unit=flt.unit,
        supplier_id=decode_id(flt.supplier_id, "Supplier", [path, "supplierId"]) if flt.supplier_id else None,
        price_min=flt.price_min,
        price_max=flt.price_max,
        currency=currency,
        sku_prefix=flt.sku_prefix or None,
        updated_since=flt.updated_since,
    )


async def check_unit_filter(ctx: Context, spec: MaterialFilterSpec, path: str = "filter") -> None:
    """An unknown unit is a client mistake worth naming, not an empty page."""
    if spec.unit is not None and await ctx.loaders.unit_code_by_alias.load(spec.unit) is None:
        raise InvalidArgument([path, "unit"], f'unknown unit "{spec.unit}"')


async def materials_page(
    ctx: Context,
    spec: MaterialFilterSpec,
    sort: str,
    descending: bool,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    plan: MaterialReadPlan = FULL_ROWS,
) -> tuple[Page, Callable[[], Awaitable[int]]]:
    kind = f"materials:{sort}:{'desc' if descending else 'asc'}"
    window = page_window(
        kind, sort=sort, descending=descending, first=first, after=after, last=last, before=before,
        max_page_size=ctx.max_page_size,
    )
    await check_unit_filter(ctx, spec)
    ctx.depends_on("list:materials")
    rows, prices = await ctx.catalog.material_page_and_prices(spec, window.spec, plan)
    prime_companions(rows, ctx.loaders.material_companions())
    if prices is not None:
        # Partial price rows (plan.whole_prices False) go to the page's objects only.
        prime_current_prices(prices, ctx.loaders.current_prices_by_material if plan.whole_prices else None,
                             ctx.loaders.supplier_by_id)

    async def total() -> int:
        return await ctx.catalog.material_count(spec)

    return make_page(kind, rows, window, prices, plan.whole_prices), total


async def category_materials_page(
    ctx: Context, category_id: int, spec: MaterialFilterSpec, first: int | None, after: str | None
) -> tuple[Page, Callable[[], Awaitable[int]]]:
    kind = f"category-materials:{category_id}"
    window = page_window(kind, sort="NAME", descending=False, first=first, after=after, max_page_size=ctx.max_page_size)
    ctx.depends_on("list:materials")
    rows = await ctx.loaders.materials_by_category.load((category_id, (spec, window.spec)))

    async def total() -> int:
        return await ctx.loaders.material_count_by_category.load((category_id, spec))

    return make_page(kind, rows, window), total


async def suppliers_page(ctx: Context, first: int | None, after: str | None) -> Page:
    window = page_window("suppliers", sort="NAME", descending=False, first=first, after=after,
                         max_page_size=ctx.max_page_size)
    ctx.depends_on("list:suppliers")
    return make_page("suppliers", await ctx.catalog.supplier_page(window.spec), window)


async def material_by_id_or_sku(ctx: Context, id: str | None, sku: str | None) -> asyncpg.Record | None:
    if id is None and sku is None:
        raise InvalidArgument(["id"], "pass id or sku")
    if id is not None:
        row = await ctx.loaders.material_by_id.load(decode_id(id, "Material", ["id"]))
        if row is None or row["deleted"]:
            return None
        if sku is not None and row["sku"] != sku:
            return None
        return row
    assert sku is not None
    return await ctx.loaders.material_by_sku.load(sku)
