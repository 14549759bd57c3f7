"""Building blocks for parameterised SQL: placeholders and keyset conditions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Keyset:
    """A position in a keyset order: the sort value and the id of the row at that position."""

    value: Any
    id: int


@dataclass(frozen=True)
class PageSpec:
    """Which slice of an ordered list to read: `limit` rows strictly after `after`."""

    sort: str = "NAME"
    descending: bool = False
    after: Keyset | None = None
    limit: int = 20


class SqlParams:
    """Collects positional parameters; SQL text only ever holds `$n` placeholders."""

    def __init__(self, *initial: Any) -> None:
        self.values: list[Any] = list(initial)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"



def keyset_condition(sort_expr: str, id_expr: str, page: PageSpec, params: SqlParams) -> str | None:
    """`(sort, id) > (value, id)` (or `<` when descending) for the page's start, if it has one."""
    if page.after is None:
        return None
    op = "<" if page.descending else ">"
    v, i = params.add(page.after.value), params.add(page.after.id)
    return f"({sort_expr}, {id_expr}) {op} ({v}, {i})"
