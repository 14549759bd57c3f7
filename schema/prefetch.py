"""Look-ahead loading: a connection loads the relations its query selects before returning.

graphql-core spends a coroutine, a future and a few callbacks on every field whose
resolver returns an awaitable; on a page of 50 materials with prices and suppliers that is
hundreds per request, and it dominated the request time. The resolvers that return lists
of objects therefore read the selection set, load each selected relation for all objects
at once through the same DataLoaders (so the SQL round trips are unchanged: one per
relation per level), and hand graphql-core objects whose relations are already in place.
Relation fields then answer synchronously; anything not prefetched (a relation reached
another way) still goes through its DataLoader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

from resolvers.context import Context
from resolvers.futures import then

_MISSING = object()


@dataclass(frozen=True)
class Relation:
    """A field without arguments that loads another object (or a list) through a DataLoader."""

    field: str  # GraphQL name
    key: Callable[[Any], Hashable | None]  # None: the object has no such relation
    loader: Callable[[Context], Any]  # the request's DataLoader to ask
    wrap: Callable[[Any], Any]  # loaded row(s) -> schema object(s)

    def resolve(self, obj: Any, context: Context) -> Any:
        """The prefetched value, else a future from the DataLoader."""
        value = obj.prefetched.get(self.field, _MISSING)
        if value is not _MISSING:
            return value
        key = self.key(obj)
        if key is None:
            return None
        return then(self.loader(context).load(key), self.wrap)


def fields_of(selections: Iterable[Any], type_names: frozenset[str]) -> list[SelectedField]:
    """The fields selected on a type, fragments (on it or its interfaces) flattened."""
    out: list[SelectedField] = []
    for sel in selections:
        if isinstance(sel, SelectedField):
            out.append(sel)
        elif isinstance(sel, InlineFragment | FragmentSpread):
            if sel.type_condition is None or sel.type_condition in type_names:
                out.extend(fields_of(sel.selections, type_names))
    return out


def nested(selections: Iterable[Any], *path: str) -> list[Any]:
    """The selections under a path of field names (e.g. "edges", "node"), merged across aliases."""
    current = list(selections)
    for name in path:
        current = [
            child
            for sel in fields_of(current, frozenset())
            if sel.name == name
            for child in sel.selections
        ]
    return current


def selections_under(info: Any, *path: str) -> list[Any]:
    """What the current field selects under `path` (e.g. "edges", "node"), all aliases merged."""
    top = [child for field in info.selected_fields for child in field.selections]
    return nested(top, *path) if path else top


async def prefetch_nodes(info: Any, nodes: Sequence[Any]) -> None:
    """Prefetches what the current connection field selects under `edges { node }` on `nodes`."""
    await prefetch(info.context, nodes, selections_under(info, "edges", "node"))


async def prefetch_direct(info: Any, nodes: Sequence[Any]) -> None:
    """Prefetches what the current field selects on `nodes` returned directly (a list or one object)."""
    await prefetch(info.context, nodes, selections_under(info))


async def prefetch(context: Context, objects: Sequence[Any], selections: Sequence[Any]) -> None:
    """Loads, level by level, every argument-free relation `selections` asks of `objects`."""
    if not objects or not selections:
        return
    cls = type(objects[0])
    relations: dict[str, Relation] = getattr(cls, "RELATIONS", {})
    if not relations:
        return
    planned: dict[str, list[Any]] = {}
    for sel in fields_of(selections, cls.TYPE_NAMES):
        if sel.name in relations and not sel.arguments:
            planned.setdefault(sel.name, []).extend(sel.selections)
    if not planned:
        return
    # Every load is issued before the first await, so each DataLoader batches all of its
    # keys for this level into a single statement.
    waits = []
    for name in planned:
        rel = relations[name]
        keys = [rel.key(o) for o in objects]
        present = [k for k in keys if k is not None]
        waits.append(rel.loader(context).load_many(present) if present else _done([]))
    results = await asyncio.gather(*waits)
    children: list[tuple[list[Any], list[Any]]] = []
    for (name, sub), rows in zip(planned.items(), results, strict=True):
        rel = relations[name]
        loaded = iter(rows)
        level: list[Any] = []
        for obj in objects:
            value = rel.wrap(next(loaded)) if rel.key(obj) is not None else None
            obj.prefetched[name] = value
            if isinstance(value, list):
                level.extend(value)
            elif value is not None:
                level.append(value)
        children.append((level, sub))
    # Siblings of one type share a level: group them so each relation is still one batch.
    await asyncio.gather(*(prefetch(context, level, sub) for level, sub in children if level))


def _done(value: Any) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future
