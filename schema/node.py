"""The Node interface and Relay page info."""

from __future__ import annotations

import strawberry


@strawberry.interface
class Node:
    id: strawberry.ID


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None

    @classmethod
    def of(cls, cursors: list[str] | tuple[str, ...] | object, has_next: bool, has_previous: bool) -> PageInfo:
        seq = list(cursors)  # type: ignore[call-overload]
        return cls(
            has_next_page=has_next,
            has_previous_page=has_previous,
            start_cursor=seq[0] if seq else None,
            end_cursor=seq[-1] if seq else None,
        )
