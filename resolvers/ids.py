"""Relay global ids: base64 of "Type:pk", decoded with the expected type checked."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from functools import lru_cache

from resolvers.errors import InvalidArgument


@lru_cache(maxsize=1 << 16)
def to_global_id(type_name: str, pk: int) -> str:
    # Memoized: a page names the same categories, units and suppliers many times over.
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode("ascii")


def parse_global_id(global_id: str) -> tuple[str, int] | None:
    """(type name, primary key), or None when the string is not one of our ids."""
    try:
        raw = base64.b64decode(global_id.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return None
    type_name, sep, pk = raw.partition(":")
    if not sep or not pk.isdigit() or not type_name:
        return None
    return type_name, int(pk)


def decode_id(global_id: str, expected_type: str, field: Sequence[str]) -> int:
    """The primary key inside `global_id`, or an InvalidArgument naming the field."""
    parsed = parse_global_id(global_id)
    if parsed is None:
        raise InvalidArgument(field, f'"{global_id}" is not a valid ID')
    type_name, pk = parsed
    if type_name != expected_type:
        raise InvalidArgument(field, f'"{global_id}" is the ID of a {type_name}, expected a {expected_type}')
    return pk
