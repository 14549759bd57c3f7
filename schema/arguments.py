"""Converted field arguments, remembered per field and raw value.

Strawberry converts every field's raw arguments (graphql-core's dicts) into Python values
on every call: input objects become dataclasses, ids GlobalIDs, enums members, and it walks
each argument's annotation to find out which (`convert_arguments`). For `materials` with a
filter that walk cost ~30-60 us per request, about as much as reading the page's rows. The
same raw arguments always convert to equal values, so a bounded memo keyed by the field's
argument list and the frozen raw values serves repeats.

Only results made of immutable values (str, int, float, bool, None, Decimal, dates, enum
members, UNSET) and input objects holding only such values are remembered; input objects
are copied on every hit, so a resolver that changed one could not leak it into another
request. Anything else (lists, Some(...), JSON objects) converts as before, and so do
arguments that fail to convert (the error is raised each time).
"""

from __future__ import annotations

import copy
import dataclasses
import enum
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import strawberry.schema.schema_converter as schema_converter
from strawberry.types.unset import UNSET

MEMO_ENTRIES = 2048
_IMMUTABLE = (str, int, float, bool, Decimal, date, datetime, time, enum.Enum)
_UNHASHABLE = object()

_original: Callable[..., dict[str, Any]] | None = None
_memo: dict[tuple[int, Any], tuple[Any, dict[str, Any]]] = {}


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a raw argument value that tells apart what converts apart
    (types included: 1, 1.0 and True are equal in Python), or _UNHASHABLE."""
    if value is None or value is UNSET:
        return value
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            frozen = _freeze(item)
            if frozen is _UNHASHABLE:
                return _UNHASHABLE
            items.append((key, frozen))
        return (dict, tuple(items))
    if isinstance(value, list | tuple):
        return _UNHASHABLE  # converted lists are mutable: not remembered
    if isinstance(value, _IMMUTABLE):
        return (type(value), value)
    return _UNHASHABLE


def _rememberable(value: Any) -> bool:
    if value is None or value is UNSET or isinstance(value, _IMMUTABLE):
        return True
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(_rememberable(getattr(value, f.name)) for f in dataclasses.fields(value))
    return False


def _fresh(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return copy.copy(value)  # its fields are immutable (_rememberable): a shallow copy is whole
    return value


def convert_arguments(kwargs: dict[str, Any], arguments: list[Any], **options: Any) -> dict[str, Any]:
    assert _original is not None
    frozen = _freeze(kwargs)
    if frozen is _UNHASHABLE:
        return _original(kwargs, arguments, **options)
    key = (id(arguments), frozen)
    entry = _memo.get(key)
    if entry is not None and entry[0] is arguments:
        return {name: _fresh(value) for name, value in entry[1].items()}
    converted = _original(kwargs, arguments, **options)
    if all(_rememberable(value) for value in converted.values()):
        if len(_memo) >= MEMO_ENTRIES:
            _memo.clear()
        # The argument list is kept with the entry, so its id cannot be reused by another.
        _memo[key] = (arguments, {name: _fresh(value) for name, value in converted.items()})
    return converted


def remember_converted_arguments() -> None:
    """Routes Strawberry's argument conversion through the memo (idempotent)."""
    global _original
    if _original is None:
        _original = schema_converter.convert_arguments
        schema_converter.convert_arguments = convert_arguments
