"""What an operation costs, computed from its document before it runs.

Every field that returns an object costs 1 (scalars are free) unless its resolver declares
otherwise (`strawberry.field(metadata={"cost": N})`, e.g. search); what a field selects
below it is multiplied by the page it asks for: `first`/`last` (as sent, or the argument's
default), or `metadata={"page": N}` for a list without paging arguments. Fragments are
costed once per type (a fragment spread many times does not cost many walks). Depth
ignores introspection (`__schema`, `__type`), which INTROSPECTION switches off as a whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    is_composite_type,
)

DEFINITION = "strawberry-definition"  # where Strawberry keeps a GraphQLField's StrawberryField


@dataclass(frozen=True)
class FieldPolicy:
    """What a resolver declared in its metadata: cost, assumed page of an unpaged list,
    a per-principal rate limit ("30/minute") and the scope it needs."""

    cost: int | None = None
    page: int | None = None
    rate_limit: str | None = None
    scope: str | None = None


def field_policy(field: GraphQLField) -> FieldPolicy:
    definition = (field.extensions or {}).get(DEFINITION)
    metadata: Mapping[str, Any] = getattr(definition, "metadata", None) or {}
    return FieldPolicy(cost=metadata.get("cost"), page=metadata.get("page"), rate_limit=metadata.get("rate_limit"),
                       scope=metadata.get("scope"))


class CostModel:
    """Costs operations of one schema; policies are read from the schema once."""

    def __init__(self, schema: GraphQLSchema) -> None:
        self.schema = schema
        self._policies: dict[tuple[str, str], FieldPolicy] = {}

    def policy(self, parent: Any, name: str, field: GraphQLField) -> FieldPolicy:
        key = (parent.name, name)
        found = self._policies.get(key)
        if found is None:
            found = self._policies[key] = field_policy(field)
        return found

    def cost(self, document: Any, operation: OperationDefinitionNode, variables: Mapping[str, Any] | None) -> int:
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        root = self.schema.get_root_type(operation.operation)
        if root is None:
            return 0
        walk = _Walk(self, fragments, variables or {}, operation)
        return walk.selections(root, operation.selection_set)

    def page_sizes(self, document: Any, operation: OperationDefinitionNode,
                   variables: Mapping[str, Any] | None) -> list[tuple[str, int]]:
        """Every (argument name, value) of `first`/`last` the operation sends, variables resolved."""
        found: list[tuple[str, int]] = []
        defaults = _variable_defaults(operation)
        values = variables or {}

        def visit(selection_set: SelectionSetNode | None, seen: frozenset[str]) -> None:
            if selection_set is None:
                return
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    for argument in selection.arguments or ():
                        if argument.name.value in ("first", "last"):
                            value = _page_number(_value(argument.value, values, defaults))
                            if value is not None:
                                found.append((argument.name.value, value))
                    visit(selection.selection_set, seen)
                elif isinstance(selection, InlineFragmentNode):
                    visit(selection.selection_set, seen)
                elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
                    fragment = next((d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
                                     and d.name.value == selection.name.value), None)
                    if fragment is not None:
                        visit(fragment.selection_set, seen | {selection.name.value})

        visit(operation.selection_set, frozenset())
        return found

    def root_policies(self, document: Any, operation: OperationDefinitionNode) -> list[tuple[str, FieldPolicy]]:
        """(Type.field, policy) of each field the operation selects at its root (fragments followed)."""
        root = self.schema.get_root_type(operation.operation)
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        found: list[tuple[str, FieldPolicy]] = []

        def visit(selection_set: SelectionSetNode, seen: frozenset[str]) -> None:
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    name = selection.name.value
                    field = root.fields.get(name) if root is not None else None
                    if field is not None:
                        found.append((f"{root.name}.{name}", self.policy(root, name, field)))
                elif isinstance(selection, InlineFragmentNode):
                    visit(selection.selection_set, seen)
                elif isinstance(selection, FragmentSpreadNode) and selection.name.value in fragments \
                        and selection.name.value not in seen:
                    visit(fragments[selection.name.value].selection_set, seen | {selection.name.value})

        visit(operation.selection_set, frozenset())
        return found


class _Walk:
    def __init__(self, model: CostModel, fragments: dict[str, FragmentDefinitionNode],
                 variables: Mapping[str, Any], operation: OperationDefinitionNode) -> None:
        self.model = model
        self.fragments = fragments
        self.variables = variables
        self.defaults = _variable_defaults(operation)
        self.memo: dict[tuple[str, str], int] = {}
        self.open: set[str] = set()

    def selections(self, parent: Any, selection_set: SelectionSetNode | None) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field(parent, selection)
            elif isinstance(selection, InlineFragmentNode):
                target = parent
                if selection.type_condition is not None:
                    target = self.model.schema.get_type(selection.type_condition.name.value) or parent
                total += self.selections(target, selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragment(selection.name.value)
        return total

    def fragment(self, name: str) -> int:
        fragment = self.fragments.get(name)
        if fragment is None or name in self.open:  # (validation refuses unknown and cyclic spreads)
            return 0
        target = self.model.schema.get_type(fragment.type_condition.name.value)
        key = (name, getattr(target, "name", ""))
        if key not in self.memo:
            self.open.add(name)
            self.memo[key] = self.selections(target, fragment.selection_set)
            self.open.discard(name)
        return self.memo[key]

    def field(self, parent: Any, node: FieldNode) -> int:
        name = node.name.value
        if name.startswith("__"):
            return 1 if node.selection_set is not None else 0
        fields = getattr(parent, "fields", None)
        field = fields.get(name) if fields else None
        if field is None:
            return 0
        policy = self.model.policy(parent, name, field)
        composite = is_composite_type(get_named_type(field.type))
        base = policy.cost if policy.cost is not None else (1 if composite else 0)
        if node.selection_set is None:
            return base
        return base + self.page(field, node, policy) * self.selections(get_named_type(field.type), node.selection_set)

    def page(self, field: GraphQLField, node: FieldNode, policy: FieldPolicy) -> int:
        sizes = []
        for name in ("first", "last"):
            if name not in field.args:
                continue
            sent = next((a for a in node.arguments or () if a.name.value == name), None)
            value = _value(sent.value, self.variables, self.defaults) if sent is not None else field.args[name].default_value
            number = _page_number(value)
            if number is None:
                # null (or a variable not sent): the resolver's own default, the schema's when it
                # declares one, else a default page
                number = _page_number(field.args[name].default_value)
                if number is None and name == "last" and sent is not None:
                    number = DEFAULT_PAGE
            if number is not None:
                sizes.append(max(number, 0))
        if sizes:
            return max(sizes)
        # A list without paging arguments (currentPrices, categories) counts once unless its
        # resolver declares the page it usually returns.
        return policy.page if policy.page is not None else 1


def _variable_defaults(operation: OperationDefinitionNode) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for definition in operation.variable_definitions or ():
        if isinstance(definition.default_value, IntValueNode):
            defaults[definition.variable.name.value] = int(definition.default_value.value)
    return defaults


DEFAULT_PAGE = 20  # what a connection's resolver pages by when `first`/`last` is null (resolvers.pagination)


def _page_number(value: Any) -> int | None:
    """A page size as the resolver will see it: graphql-core coerces an integral float
    (`100.0`) to the Int 100, so it counts as 100, not as "no number"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _value(node: Any, variables: Mapping[str, Any], defaults: Mapping[str, Any]) -> Any:
    if isinstance(node, IntValueNode):
        return int(node.value)
    if isinstance(node, VariableNode):
        name = node.name.value
        return variables[name] if name in variables else defaults.get(name)
    return None


def operation_depth(document: Any, operation: OperationDefinitionNode) -> int:
    """The deepest field nesting, through fragments; introspection fields are not counted."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    memo: dict[str, int] = {}

    def depth(selection_set: SelectionSetNode | None, seen: frozenset[str]) -> int:
        if selection_set is None:
            return 0
        deepest = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.name.value.startswith("__"):
                    continue
                deepest = max(deepest, 1 + depth(selection.selection_set, seen))
            elif isinstance(selection, InlineFragmentNode):
                deepest = max(deepest, depth(selection.selection_set, seen))
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in seen or name not in fragments:
                    continue
                if name not in memo:
                    memo[name] = depth(fragments[name].selection_set, seen | {name})
                deepest = max(deepest, memo[name])
        return deepest

    return depth(operation.selection_set, frozenset())
