"""Strawberry types of the public contract (../shared/contract/schema.graphql)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.tools import merge_types

from schema.admin import AdminMutation, AdminQuery
from schema.category import Category
from schema.execution import CompiledExecutionContext
from schema.material import Material
from schema.mutation import Mutation
from schema.price import PriceList
from schema.query import Query
from schema.subscription import Subscription
from schema.supplier import Supplier


def build_schema(
    extensions: Sequence[type[SchemaExtension] | SchemaExtension] = (), *, compiled: bool = True
) -> strawberry.Schema:
    """The executable schema with the given extensions, in the order given.

    `compiled=False` leaves every field to graphql-core (tests compare the two).
    """
    from schema import arguments

    arguments.remember_converted_arguments()
    return strawberry.Schema(
        query=merge_types("Query", (Query, AdminQuery)),  # admin fields: issue 7
        mutation=merge_types("Mutation", (Mutation, AdminMutation)),
        subscription=Subscription,
        types=[Material, Category, Supplier, PriceList],
        extensions=list[Any](extensions),
        execution_context_class=CompiledExecutionContext if compiled else None,
    )
