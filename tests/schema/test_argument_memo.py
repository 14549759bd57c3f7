"""Remembered argument conversion (schema.arguments) gives what Strawberry's own gives."""

from __future__ import annotations

from decimal import Decimal

import pytest
from strawberry.types.arguments import convert_arguments as strawberry_convert

from schema import arguments, build_schema
from schema.material import MaterialFilter


@pytest.fixture(scope="module")
def materials_field() -> tuple:
    schema = build_schema([])
    query = schema.get_type_by_name("Query")
    field = next(f for f in query.fields if f.python_name == "materials")
    return field, {"scalar_registry": schema.schema_converter.scalar_registry, "config": schema.config, "info": None}


def test_a_repeat_is_served_from_the_memo_with_a_fresh_input_object(materials_field: tuple) -> None:
    field, options = materials_field
    raw = {"first": 50, "filter": {"categoryId": "Q2F0ZWdvcnk6NDI=", "priceMin": Decimal("10.5")}}
    first = arguments.convert_arguments(raw, field.arguments, **options)
    assert first == strawberry_convert(raw, field.arguments, **options)
    again = arguments.convert_arguments(dict(raw), field.arguments, **options)
    assert again == first and isinstance(again["filter"], MaterialFilter)
    # A resolver that changes its filter cannot change the next request's.
    again["filter"].category_id = "changed"
    third = arguments.convert_arguments(raw, field.arguments, **options)
    assert third["filter"].category_id == "Q2F0ZWdvcnk6NDI=" and third["filter"] is not again["filter"]
    assert third["filter"].price_min == Decimal("10.5")


def test_values_equal_in_python_but_of_other_types_are_told_apart() -> None:
    assert arguments._freeze({"a": 1}) != arguments._freeze({"a": True})
    assert arguments._freeze({"a": 1}) != arguments._freeze({"a": 1.0})
    assert arguments._freeze({"a": [1, 2]}) is arguments._UNHASHABLE  # lists are not remembered


def test_what_is_not_remembered_converts_every_time(materials_field: tuple) -> None:
    field, options = materials_field
    before = len(arguments._memo)
    raw = {"first": 5, "filter": {"categoryId": "Q2F0ZWdvcnk6MQ==", "unit": "м3"}, "orderBy": {"field": "NAME"}}
    converted = arguments.convert_arguments(raw, field.arguments, **options)
    assert converted == strawberry_convert(raw, field.arguments, **options)
    assert len(arguments._memo) == before + 1  # enums and input objects of plain values are kept
    assert not arguments._rememberable([1, 2])
    assert arguments._rememberable(converted["filter"])
