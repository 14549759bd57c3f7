"""Units of measure."""

from __future__ import annotations

import asyncpg
import strawberry


@strawberry.type
class Unit:
    code: str
    name: str
    aliases: list[str]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Unit:
        return cls(code=row["code"], name=row["name"], aliases=list(row["aliases"]))

    @classmethod
    def from_optional_row(cls, row: asyncpg.Record | None) -> Unit | None:
        return None if row is None else cls.from_row(row)
