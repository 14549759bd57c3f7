"""Resolvers for prices, price history and price lists."""

from __future__ import annotations

from datetime import datetime

from backends.prices import HistorySpec
from resolvers.context import Context
from resolvers.errors import InvalidArgument
from resolvers.ids import decode_id
from resolvers.pagination import Page, make_page, page_window


async def price_history_page(
    ctx: Context, material_id: int, supplier_id: str | None, since: datetime | None, first: int | None,
    after: str | None,
) -> Page:
    spec = HistorySpec(
        supplier_id=decode_id(supplier_id, "Supplier", ["supplierId"]) if supplier_id else None, since=since
    )
    kind = "price-history"
    window = page_window(kind, sort="VALID_FROM", descending=True, first=first, after=after,
                         max_page_size=ctx.max_page_size)
    ctx.depends_on(f"material:{material_id}", "list:prices")
    rows = await ctx.loaders.price_history_by_material.load((material_id, (spec, window.spec)))
    return make_page(kind, rows, window)


async def price_list_prices_page(ctx: Context, price_list_id: int, first: int | None, after: str | None) -> Page:
    window = page_window("price-list-prices", sort="ID", descending=False, first=first, after=after,
                         max_page_size=ctx.max_page_size)
    ctx.depends_on(f"price_list:{price_list_id}")
    rows = await ctx.loaders.prices_by_price_list.load((price_list_id, window.spec))
    return make_page("price-list-prices", rows, window)


async def supplier_price_lists_page(ctx: Context, supplier_id: int, first: int | None, after: str | None) -> Page:
    window = page_window("supplier-price-lists", sort="VERSION", descending=True, first=first, after=after,
                         max_page_size=ctx.max_page_size)
    ctx.depends_on(f"supplier:{supplier_id}")
    rows = await ctx.loaders.price_lists_by_supplier.load((supplier_id, window.spec))
    return make_page("supplier-price-lists", rows, window)


async def rejected_rows(ctx: Context, price_list_id: int, first: int | None, after: str | None) -> list:
    """Rejected rows by line; `after` is the line number of the last row seen (as a string)."""
    size = 50 if first is None else first
    if size < 0 or size > ctx.max_page_size:
        raise InvalidArgument(["first"], f"must be between 0 and {ctx.max_page_size} (got {size})")
    after_line: int | None = None
    if after is not None:
        if not after.isdigit():
            raise InvalidArgument(["after"], f'"{after}" is not a line number')
        after_line = int(after)
    ctx.depends_on(f"price_list:{price_list_id}")
    return await ctx.prices.rejected_rows(price_list_id, after_line, size)
