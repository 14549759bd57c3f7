"""The DataLoaders' way through the cache: tags per entity, and plain values to store.

A batch function asks the request's CacheView (backends.cache) for its keys; the cache
answers from L1 or L2 and calls the loader's uncached function for the rest. With no
cache (CACHE=off, or a request outside the server) loaders read PostgreSQL directly.

Tags name what a value was read from, so that the events of backends.freshness drop it:
a material row holds its category's name, current prices name their suppliers, and a
key that found nothing is tagged with what would create it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any

from backends.cache import CacheView, TagsOf


def plain(value: Any) -> Any:
    """asyncpg Records (and lists of them) as dicts: what the cache can store and share."""
    if isinstance(value, list):
        return [plain(v) for v in value]
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, Mapping) or hasattr(value, "items"):
        return dict(value.items())
    return value


async def through_cache(
    view: CacheView | None, kind: str, keys: Sequence[Hashable],
    load: Callable[[list[Any]], Awaitable[Sequence[Any]]], tags_of: TagsOf,
) -> list[Any]:
    """`load(keys)` (values in key order), answered from the cache where it can be."""
    if view is None:
        return list(await load(list(keys)))

    async def fetch(missing: list[Any]) -> list[Any]:
        return [plain(v) for v in await load(missing)]

    return await view.get_many(kind, keys, fetch, tags_of)


def material_tags(key: Any, row: Any) -> list[str]:
    if row is None:
        return [f"material:{key}"] if isinstance(key, int) else ["list:materials"]
    tags = [f"material:{row['id']}"]
    if row["category_id"] is not None:
        tags.append(f"category:{row['category_id']}")
    if not isinstance(key, int):  # by SKU: another material may take the SKU
        tags.append("list:materials")
    return tags


def category_tags(key: Any, row: Any) -> list[str]:
    return [f"category:{key}", "list:categories"]


def category_list_tags(key: Any, rows: Any) -> list[str]:
    return ["list:categories"]  # categories appear only with imports, which touch this tag


def supplier_tags(key: Any, row: Any) -> list[str]:
    return [f"supplier:{key}"] if row is not None else [f"supplier:{key}", "list:suppliers"]


def price_list_tags(key: Any, row: Any) -> list[str]:
    return [f"price_list:{key}"] if row is None else [f"price_list:{key}", f"supplier:{row['supplier_id']}"]


def current_prices_tags(key: Any, rows: Any) -> list[str]:
    return [f"material:{key}", *sorted({f"supplier:{r['supplier_id']}" for r in rows})]


def unit_tags(key: Any, row: Any) -> list[str]:
    return ["units"]  # units change only with migrations, which change the namespace
