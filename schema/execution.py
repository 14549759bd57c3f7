"""Compiled completion of selection sets whose data is already in memory.

What we measured: on W2 (50 materials with unit, category and current prices with their
suppliers, ~600 fields) graphql-core spent ~5 of the 7 ms a request took in-process
resolving fields one at a time: a `GraphQLResolveInfo`, a `Path`, a resolver call through
Strawberry's wrappers, an awaitable check and a `complete_value` dispatch for every field,
even for a plain attribute. After `schema.prefetch` has loaded every relation a page selects,
none of that work can change the result.

So this execution context compiles each selection set (once, then cached per parsed
document) into generated Python functions, one per object type in the selection, that
read attributes and prefetched relations and build the response dicts directly. A field takes the compiled path when it and everything under it is:

- a plain attribute (a Strawberry field without a resolver), a synchronous method taking
  only `self` (an edge's cursor), `__typename`, or a relation listed in its type's
  `RELATIONS` (`schema.prefetch`) and selected without arguments;
- of a scalar, enum, object or list type (not an interface or union);
- not under `@defer`.

Anything else (a field with arguments or an async resolver, a relation that was not
prefetched, a null in a non-null position, a value a scalar refuses) is handed back to
graphql-core for that field, which then resolves and reports it exactly as it would have:
the compiled path only reads memory, so trying it first changes nothing. Strawberry field
extensions and schema extensions' `resolve` hooks do not run for compiled fields; the
schema has none today.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from operator import attrgetter
from typing import Any

import orjson
from graphql import (
    BREAK,
    GraphQLID,
    GraphQLObjectType,
    GraphQLString,
    OperationType,
    Undefined,
    VariableNode,
    Visitor,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
    visit,
)
from graphql.execution.executor import gather_with_cancel
from graphql.pyutils import Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from resolvers.context import Context
from schema.page_render import Rendered

DEFINITION = "strawberry-definition"
PLAN_CACHE_SIZE = 1024  # compiled selection sets kept across requests (LRU)
_SHAREABLE: dict[int, tuple[Any, bool]] = {}  # id(operation) -> (operation, plans may be shared)
_PLANS: OrderedDict[tuple[Any, ...], tuple[Any, Any, list[tuple[str, Any, FieldFn | None]]]] = OrderedDict()

Complete = Callable[[Any], Any]
FieldFn = Callable[[Any], Any]

# Subscription events that many subscribers receive alike (schema.subscription.PriceEvent
# sets `shared_result_key`): the first subscriber of an event with a given parsed operation
# and variables executes it, the others await and send the same result.
# (event key, id(operation), variables) -> (operation, the running or finished execution).
SHARED_EVENT_RESULTS_SIZE = 4096
_SHARED_EVENTS: OrderedDict[tuple[Any, int, bytes], tuple[Any, asyncio.Future[Any]]] = OrderedDict()
SHARED_EVENT_STATS = {"executed": 0, "shared": 0}


class _NotCompiled(Exception):
    """This value cannot be completed from memory: graphql-core takes the field over."""


class CompiledExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor with a compiled path for in-memory selection sets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # id(grouped field set) -> (the set, its plan): the entry keeps the set alive, so
        # its id cannot be reused by another set during the request.
        self._plans: dict[int, tuple[Any, list[tuple[str, Any, FieldFn | None]]]] = {}
        # (type, id(field details list)) -> (the list, its compiled completion), likewise.
        self._objects: dict[tuple[str, int], tuple[Any, Complete | None]] = {}
        self._shareable: bool | None = None
        if isinstance(self.context_value, Context):
            self.context_value.compiled_completion = True

    # ------------------------------------------------------------------ execution

    def execute_operation(self, serially: bool | None = None) -> Any:
        """One execution per subscription event, parsed operation and variables, whatever the
        number of subscribers (see `_SHARED_EVENTS`); anything else as graphql-core does it.

        A subscriber that arrives while the first one's execution runs awaits it (shielded: the
        first subscriber leaving does not cancel it for the others). A result with errors is
        not shared: each subscriber then executes for itself, so an error is always its own.
        """
        event_key = getattr(self.root_value, "shared_result_key", None)
        if event_key is None or self.operation.operation is not OperationType.SUBSCRIPTION:
            return super().execute_operation(serially)
        try:
            variables = orjson.dumps(self.variable_values, option=orjson.OPT_SORT_KEYS, default=str)
        except TypeError:
            return super().execute_operation(serially)
        key = (event_key, id(self.operation), variables)
        memo = _SHARED_EVENTS.get(key)
        if memo is not None and memo[0] is self.operation:
            SHARED_EVENT_STATS["shared"] += 1
            return self._shared_result(memo[1], serially)
        SHARED_EVENT_STATS["executed"] += 1
        result = super().execute_operation(serially)
        future: asyncio.Future[Any]
        if self.is_awaitable(result):
            future = asyncio.ensure_future(result)
        else:
            future = asyncio.get_running_loop().create_future()
            future.set_result(result)
        _SHARED_EVENTS[key] = (self.operation, future)  # keeps the operation alive: its id is not reused
        if len(_SHARED_EVENTS) > SHARED_EVENT_RESULTS_SIZE:
            _SHARED_EVENTS.popitem(last=False)
        return self._first_result(future) if not future.done() else result

    @staticmethod
    async def _first_result(future: asyncio.Future[Any]) -> Any:
        return await asyncio.shield(future)

    async def _shared_result(self, future: asyncio.Future[Any], serially: bool | None) -> Any:
        result = await asyncio.shield(future)
        if result.errors:
            own = super().execute_operation(serially)
            return await own if self.is_awaitable(own) else own
        return result

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        memo = self._plans.get(id(grouped_field_set))
        if memo is not None and memo[0] is grouped_field_set:
            plan = memo[1]
        else:
            plan = self._shared_plan(parent_type, grouped_field_set)
            self._plans[id(grouped_field_set)] = (grouped_field_set, plan)
        results: dict[str, Any] = {}
        awaitable_fields: list[str] = []
        is_awaitable = self.is_awaitable
        try:
            for response_name, field_details_list, compiled in plan:
                if compiled is not None:
                    try:
                        results[response_name] = compiled(source_value)
                        continue
                    except _NotCompiled:
                        pass
                result = self.execute_field(
                    parent_type, source_value, field_details_list,
                    Path(path, response_name, parent_type.name), position_context,
                )
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:
                self.settle_in_background([results[name] for name in awaitable_fields])
            raise
        if not awaitable_fields:
            return results

        async def get_results() -> dict[str, Any]:
            if len(awaitable_fields) == 1:
                name = awaitable_fields[0]
                results[name] = await results[name]
            else:
                values = await gather_with_cancel(*(results[name] for name in awaitable_fields))
                results.update(zip(awaitable_fields, values, strict=True))
            return results

        return get_results()

    # ------------------------------------------------------------------ compilation

    def _shared_plan(self, parent_type: GraphQLObjectType, grouped_field_set: Any) -> list[tuple[str, Any, FieldFn | None]]:
        """The plan from an earlier request of the same parsed document, or a new one.

        Plans depend on the document and, through @skip/@include, on variables; a document
        whose directives read variables is compiled per request. The AST nodes' ids make the
        key: the entry holds the operation and fragments, so those ids stay theirs.
        """
        if self._shareable is None:
            known = _SHAREABLE.get(id(self.operation))
            if known is None or known[0] is not self.operation:
                known = (self.operation, not _directives_read_variables(self.operation, self.fragment_definitions))
                _SHAREABLE[id(self.operation)] = known
                if len(_SHAREABLE) > PLAN_CACHE_SIZE:
                    _SHAREABLE.pop(next(iter(_SHAREABLE)))
            self._shareable = known[1]
        if not self._shareable:
            return self._plan(parent_type, grouped_field_set)
        key = (
            id(self.operation),
            parent_type.name,
            tuple((name, tuple(id(d.node) for d in details)) for name, details in grouped_field_set.items()),
        )
        entry = _PLANS.get(key)
        if entry is not None and entry[0] is self.operation:
            _PLANS.move_to_end(key)
            return entry[2]
        plan = self._plan(parent_type, grouped_field_set)
        _PLANS[key] = (self.operation, tuple(self.fragment_definitions.values()), plan)
        if len(_PLANS) > PLAN_CACHE_SIZE:
            _PLANS.popitem(last=False)
        return plan

    def _plan(self, parent_type: GraphQLObjectType, grouped_field_set: Any) -> list[tuple[str, Any, FieldFn | None]]:
        return [
            (name, details, self._field(parent_type, details))
            for name, details in grouped_field_set.items()
        ]

    def _field(self, parent_type: GraphQLObjectType, field_details_list: Any) -> FieldFn | None:
        """A function source -> completed value for one response key, or None (not compilable)."""
        spec = self._field_spec(parent_type, field_details_list)
        if spec is None:
            return None
        kind, data, return_type = spec
        if kind == "typename":
            return lambda _source: data
        getter: Callable[[Any], Any] = (
            attrgetter(data) if kind == "attr" else data if kind == "method" else _prefetched(data)
        )
        complete = self._complete(return_type, field_details_list)
        if complete is None:
            return None

        def field(source: Any) -> Any:
            return complete(getter(source))

        return field

    def _field_spec(self, parent_type: GraphQLObjectType, field_details_list: Any) -> tuple[str, Any, Any] | None:
        """How a response key is read: ("typename", name, None), ("attr", python name, type),
        ("method", function, type) or ("relation", GraphQL name, type); None if not compilable."""
        node = field_details_list[0].node
        name = node.name.value
        if name == "__typename":
            return "typename", parent_type.name, None
        if any(details.node.arguments for details in field_details_list):
            return None
        field_def = parent_type.fields.get(name)
        if field_def is None:
            return None
        definition = field_def.extensions.get(DEFINITION)
        if definition is None or definition.extensions:
            return None
        resolver = definition.base_resolver
        if resolver is None:
            return "attr", definition.python_name, field_def.type
        if _plain_method(resolver):
            return "method", resolver.wrapped_func, field_def.type
        origin = getattr(parent_type.extensions.get(DEFINITION), "origin", None)
        if name not in getattr(origin, "RELATIONS", {}):
            return None
        return "relation", name, field_def.type

    def _complete(self, return_type: Any, field_details_list: Any) -> Complete | None:
        if is_non_null_type(return_type):
            inner = self._complete(return_type.of_type, field_details_list)
            if inner is None:
                return None

            def non_null(value: Any) -> Any:
                if value is None:
                    raise _NotCompiled  # graphql-core reports the null where it belongs
                return inner(value)

            return non_null
        if is_list_type(return_type):
            item = self._complete(return_type.of_type, field_details_list)
            if item is None:
                return None

            def list_value(value: Any) -> Any:
                if value is None:
                    return None
                if value.__class__ is Rendered:  # completed by its resolver (schema.page_render)
                    return value.value
                if isinstance(value, str | bytes | dict):
                    raise _NotCompiled
                return [item(v) for v in value]

            inner_item = return_type.of_type
            if is_non_null_type(inner_item) and is_object_type(inner_item.of_type):
                # Non-null objects (a page's edges): one comprehension over the object
                # function, which returns None for None (refused here), instead of a call
                # through the non-null closure per item.
                complete_item = self._complete(inner_item.of_type, field_details_list)
                if complete_item is None:
                    return None

                def object_list(value: Any) -> Any:
                    if value.__class__ is not list:
                        return list_value(value)
                    completed = [complete_item(v) for v in value]
                    if None in completed:
                        raise _NotCompiled
                    return completed

                return object_list
            return list_value
        if is_leaf_type(return_type):
            return _leaf(return_type)
        if is_object_type(return_type):
            key = (return_type.name, id(field_details_list))
            memo = self._objects.get(key)
            if memo is not None and memo[0] is field_details_list:
                return memo[1]
            self._objects[key] = (field_details_list, None)  # a cycle in the selection is not compiled
            compiled = self._object(return_type, field_details_list)
            self._objects[key] = (field_details_list, compiled)
            return compiled
        return None  # interfaces and unions resolve their type at run time: graphql-core does it

    def _object(self, return_type: GraphQLObjectType, field_details_list: Any) -> Complete | None:
        """Generates a Python function that completes one object of this selection set.

        Straight-line code, one statement group per response key, instead of a closure per
        field: the closures' calls were most of the compiled path's cost.
        """
        grouped_field_set, new_defer_usages, _ = self.collect_subfields(return_type, field_details_list)
        if new_defer_usages:
            return None
        env: dict[str, Any] = {"NC": _NotCompiled}
        lines = ["def complete_object(v):", "    if v is None:", "        return None", "    r = {}"]
        for index, (response_name, details) in enumerate(grouped_field_set.items()):
            spec = self._field_spec(return_type, details)
            if spec is None:
                return None
            kind, data, field_type = spec
            key = repr(response_name)
            if kind == "typename":
                lines.append(f"    r[{key}] = {data!r}")
                continue
            if kind == "attr":
                lines.append(f"    x = v.{data}" if data.isidentifier() else f"    x = getattr(v, {data!r})")
            elif kind == "method":
                env[f"m{index}"] = data
                lines.append(f"    x = m{index}(v)")
            else:
                lines += ["    try:", f"        x = v.prefetched[{data!r}]",
                          "    except (KeyError, AttributeError):", "        raise NC from None"]
            value_lines = self._emit_value(field_type, details, index, env)
            if value_lines is None:
                return None
            lines += value_lines
            lines.append(f"    r[{key}] = x")
        lines.append("    return r")
        namespace: dict[str, Any] = {}
        exec(compile("\n".join(lines), f"<compiled {return_type.name}>", "exec"), env, namespace)
        return namespace["complete_object"]

    def _emit_value(self, field_type: Any, details: Any, index: int, env: dict[str, Any]) -> list[str] | None:
        """Statements that turn `x` (the raw value) into its completed value, in place."""
        non_null = is_non_null_type(field_type)
        inner = field_type.of_type if non_null else field_type
        lines = ["    if x is None:", "        raise NC"] if non_null else []
        if is_leaf_type(inner):
            env[f"s{index}"] = _serializer(inner)
            guard = "" if non_null else "x is not None and "
            if inner is GraphQLString or inner is GraphQLID:
                lines.append(f"    if {guard}x.__class__ is not str:")
            elif not non_null:
                lines.append("    if x is not None:")
            else:
                return [*lines, f"    x = s{index}(x)"]
            return [*lines, f"        x = s{index}(x)"]
        if is_object_type(inner):
            complete = self._complete(inner, details)
            if complete is None:
                return None
            env[f"o{index}"] = complete
            return [*lines, f"    x = o{index}(x)"]
        complete = self._complete(field_type, details)  # lists: the closure handles items and nulls
        if complete is None:
            return None
        env[f"c{index}"] = complete
        return [f"    x = c{index}(x)"]


def _plain_method(resolver: Any) -> bool:
    """A synchronous method of the type taking nothing but `self` (e.g. an edge's cursor)."""
    return bool(
        resolver.self_parameter is not None
        and resolver.info_parameter is None
        and resolver.root_parameter is None
        and resolver.parent_parameter is None
        and not resolver.arguments
        and not resolver.is_async
        and len(resolver.signature.parameters) == 1
    )


def _prefetched(name: str) -> Callable[[Any], Any]:
    def relation(source: Any) -> Any:
        try:
            return source.prefetched[name]
        except (KeyError, AttributeError):
            raise _NotCompiled from None

    return relation


def _serializer(return_type: Any) -> Callable[[Any], Any]:
    """The scalar's or enum's serializer; a value it refuses raises _NotCompiled."""
    serialize = return_type.serialize

    def serialized(value: Any) -> Any:
        return _serialized(serialize, value)

    return serialized


def _leaf(return_type: Any) -> Complete:
    serialize = return_type.serialize
    if return_type is GraphQLString or return_type is GraphQLID:

        def text(value: Any) -> Any:
            if value is None or value.__class__ is str:
                return value
            return _serialized(serialize, value)

        return text

    def leaf(value: Any) -> Any:
        if value is None:
            return None
        return _serialized(serialize, value)

    return leaf


def _serialized(serialize: Callable[[Any], Any], value: Any) -> Any:
    try:
        result = serialize(value)
    except Exception:
        raise _NotCompiled from None  # graphql-core raises and reports it on the field
    if result is None or result is Undefined:
        raise _NotCompiled
    return result


def _directives_read_variables(operation: Any, fragments: dict[str, Any]) -> bool:
    """Whether any directive in the operation or its fragments takes a variable."""
    found = False

    class Finder(Visitor):
        def enter_directive(self, node: Any, *_: Any) -> Any:
            nonlocal found
            if any(isinstance(arg.value, VariableNode) for arg in node.arguments):
                found = True
                return BREAK
            return None

    for node in (operation, *fragments.values()):
        visit(node, Finder())
        if found:
            return True
    return False
