"""Our schema against the public contract (../shared/contract/schema.graphql): nothing renamed,
removed or retyped, argument defaults as written. Extensions are allowed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    build_schema,
    is_input_type,
    value_from_ast,
)
from graphql.pyutils import Undefined

from schema import build_schema as build_our_schema

CONTRACT = Path(os.environ.get("CONTRACT_SCHEMA", Path(__file__).resolve().parents[3] / "shared/contract/schema.graphql"))

# Parts of the contract that later issues deliver. Each entry leaves this list in the
# commit that implements it; the test fails if an entry is implemented but still listed.
NOT_YET: dict[str, str] = {}


@pytest.fixture(scope="module")
def schemas() -> tuple[GraphQLSchema, GraphQLSchema]:
    assert CONTRACT.is_file(), f"the contract is expected at {CONTRACT} (set CONTRACT_SCHEMA to move it)"
    return build_schema(CONTRACT.read_text(encoding="utf-8")), build_our_schema()._schema


def _default(arg) -> object:
    if arg.ast_node is not None and arg.ast_node.default_value is not None:
        return value_from_ast(arg.ast_node.default_value, arg.type)
    if arg.default_value is Undefined:
        return None  # no default and a null default mean the same for a nullable argument
    # Strawberry keeps a Python enum member as the default; the SDL spells its name.
    return getattr(arg.default_value, "name", arg.default_value)


def contract_differences(contract: GraphQLSchema, ours: GraphQLSchema) -> list[str]:
    problems: list[str] = []
    for name, ctype in contract.type_map.items():
        if name.startswith("__") or name in NOT_YET:
            continue
        otype = ours.type_map.get(name)
        if otype is None:
            problems.append(f"type {name} is missing")
            continue
        kinds = (GraphQLEnumType, GraphQLInputObjectType, GraphQLInterfaceType, GraphQLObjectType, GraphQLUnionType)
        if next((k for k in kinds if isinstance(otype, k)), None) is not next((k for k in kinds if isinstance(ctype, k)), None):
            problems.append(f"{name} is a {type(otype).__name__}, the contract says {type(ctype).__name__}")
            continue
        if isinstance(ctype, GraphQLEnumType):
            if set(ctype.values) != set(otype.values):
                problems.append(f"enum {name} has {sorted(otype.values)}, the contract {sorted(ctype.values)}")
        if isinstance(ctype, GraphQLObjectType | GraphQLInterfaceType):
            wanted = {i.name for i in ctype.interfaces}
            if not wanted <= {i.name for i in otype.interfaces}:
                problems.append(f"{name} does not implement {wanted}")
        if isinstance(ctype, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType):
            for fname, cfield in ctype.fields.items():
                where = f"{name}.{fname}"
                if where in NOT_YET:
                    continue
                ofield = otype.fields.get(fname)
                if ofield is None:
                    problems.append(f"{where} is missing")
                    continue
                if str(ofield.type) != str(cfield.type):
                    problems.append(f"{where} is {ofield.type}, the contract says {cfield.type}")
                if isinstance(ctype, GraphQLInputObjectType) and is_input_type(cfield.type):
                    if _default(ofield) != _default(cfield):
                        problems.append(f"{where} defaults to {_default(ofield)!r}, the contract {_default(cfield)!r}")
                for aname, carg in getattr(cfield, "args", {}).items():
                    oarg = ofield.args.get(aname)
                    if oarg is None:
                        problems.append(f"{where}({aname}) is missing")
                    elif str(oarg.type) != str(carg.type):
                        problems.append(f"{where}({aname}) is {oarg.type}, the contract says {carg.type}")
                    elif _default(oarg) != _default(carg):
                        problems.append(f"{where}({aname}) defaults to {_default(oarg)!r}, the contract {_default(carg)!r}")
                for aname, oarg in getattr(ofield, "args", {}).items():
                    if aname not in cfield.args and oarg.type.__class__.__name__ == "GraphQLNonNull" and oarg.default_value is Undefined:
                        problems.append(f"{where}({aname}) is a new required argument: old clients break")
        if isinstance(ctype, GraphQLUnionType) and {t.name for t in ctype.types} != {t.name for t in otype.types}:
            problems.append(f"union {name} members differ")
    return problems


def test_schema_keeps_every_name_type_and_default_of_the_contract(schemas) -> None:
    contract, ours = schemas
    assert contract_differences(contract, ours) == []


def test_not_yet_list_holds_only_what_is_really_missing(schemas) -> None:
    _, ours = schemas
    implemented = []
    for entry in NOT_YET:
        type_name, _, field = entry.partition(".")
        otype = ours.type_map.get(type_name)
        if otype is not None and (not field or field in getattr(otype, "fields", {})):
            implemented.append(entry)
    assert implemented == [], "implemented now: take these out of NOT_YET"


def test_the_check_catches_a_renamed_field() -> None:
    contract = build_schema("type Query { materials(first: Int = 20): [String!]! }")
    renamed = build_schema("type Query { materialList(first: Int = 20): [String!]! }")
    new_default = build_schema("type Query { materials(first: Int = 50): [String!]! }")
    assert contract_differences(contract, renamed) == ["Query.materials is missing"]
    assert contract_differences(contract, new_default) == ["Query.materials(first) defaults to 50, the contract 20"]
