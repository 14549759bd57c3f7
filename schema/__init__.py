"""Strawberry types of the public contract (../shared/contract/schema.graphql)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import strawberry
from strawberry.extensions import SchemaExtension

from schema.category import Category
from schema.material import Material
from schema.price import PriceList
from schema.query import Query
from schema.supplier import Supplier


def build_schema(extensions: Sequence[type[SchemaExtension] | SchemaExtension] = ()) -> strawberry.Schema:
    """The executable schema with the given extensions, in the order given."""
    return strawberry.Schema(
        query=Query,
        types=[Material, Category, Supplier, PriceList],
        extensions=list[Any](extensions),
    )
