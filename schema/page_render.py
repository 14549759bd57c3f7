"""A page of materials completed straight from the rows its statement read.

What we measured: after everything else (one statement, relations built from its rows,
compiled completion), a W2 page (50 materials with unit, category and current prices with
suppliers) still spent ~0.5 ms of its ~1.2 ms of Python building objects (a Material, Unit,
Category, Price and Supplier per row, edges), prefetching over them and completing them,
field by field, into the dicts that become JSON.

When every field a `materials` query selects under `edges` is one this module knows how to
read from a page row (`RENDERABLE`), the resolver renders the edges at once: generated
code, one function per selection shape (cached like graphql-core's own plans), reads the
row's columns, its companion columns (unit, category) and its current prices, and builds
the response dicts directly. It is used only under `CompiledExecutionContext` (which
passes the rendered list through, see `Rendered`) and otherwise changes nothing: the same
statement, the same loaders primed, the same values, keys and order as the compiled path
(tests run documents through both and compare). Anything else - a field with arguments,
a directive, a field not listed, a null where the schema allows none - falls back to the
object path for the whole page.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from graphql import FieldNode, FragmentSpreadNode, InlineFragmentNode

from loaders.base import unit_aliases
from resolvers.ids import to_global_id
from resolvers.pagination import Page

RENDER_CACHE_SIZE = 1024


class Rendered:
    """A value already completed (a list of edge dicts): compiled completion returns it as is."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Fallback(Exception):
    """A row holds what the rendered shape cannot answer the way the object path would."""


# The fields each type can answer from a page row, and what the generated code reads.
# Material values come from the page row `row`, Unit and Category from its companion
# columns, Price from one of the material's current prices `p` (backends.catalog
# fold_current_prices), Supplier from the same price.
_MATERIAL = {"__typename", "id", "sku", "name", "description", "color", "unit", "category", "currentPrices"}
_UNIT = {"__typename", "code", "name", "aliases"}
_CATEGORY = {"__typename", "id", "name"}
_PRICE_SUMMARY = {"__typename", "unitPrice", "currency", "supplier"}
_PRICE_WHOLE = _PRICE_SUMMARY | {"unitCalcPrice", "buyPrice", "salePrice", "stock"}
_SUPPLIER = {"__typename", "id", "name"}
_EDGE = {"__typename", "cursor", "node"}
_CONNECTION = {"__typename", "edges", "pageInfo", "totalCount"}
RENDERABLE = {"MaterialConnection": _CONNECTION, "MaterialEdge": _EDGE, "Material": _MATERIAL, "Unit": _UNIT, "Category": _CATEGORY,
              "Price": _PRICE_WHOLE, "Supplier": _SUPPLIER}

_TYPE_NAMES = {"MaterialConnection": {"MaterialConnection"}, "MaterialEdge": {"MaterialEdge"}, "Material": {"Material", "Node"}, "Unit": {"Unit"},
               "Category": {"Category", "Node"}, "Price": {"Price"}, "Supplier": {"Supplier", "Node"}}

Fields = dict[str, tuple[str, list[Any]]]  # response key -> (field name, selection sets under it)

# (id of the connection field node, whole prices) -> (the nodes, the renderer or None).
_RENDERERS: OrderedDict[tuple[Any, ...], tuple[tuple[Any, ...], Callable[[Page], list[Any]] | None]] = OrderedDict()


def page_renderer(field_nodes: Sequence[Any], fragments: dict[str, Any],
                  whole_prices: bool) -> Callable[[Page], list[Any]] | None:
    """The function rendering a page's edges for this `materials` selection, or None when
    the selection asks for anything it cannot render."""
    key = (*map(id, field_nodes), whole_prices)
    known = _RENDERERS.get(key)
    if known is not None and all(a is b for a, b in zip(known[0], field_nodes, strict=True)):
        _RENDERERS.move_to_end(key)
        return known[1]
    renderer = _build(field_nodes, fragments, whole_prices)
    # The entry holds the nodes (and, through them, the parsed document): their ids stay theirs.
    _RENDERERS[key] = (tuple(field_nodes), renderer)
    if len(_RENDERERS) > RENDER_CACHE_SIZE:
        _RENDERERS.popitem(last=False)
    return renderer


def _collect(selection_sets: Sequence[Any], fragments: dict[str, Any], type_name: str) -> Fields | None:
    """The fields selected on `type_name`, merged by response key in document order (as
    graphql-core collects them); None if a directive, an argument or an unknown fragment
    type appears."""
    names = _TYPE_NAMES[type_name]
    out: Fields = {}

    def walk(selection_set: Any) -> bool:
        for sel in selection_set.selections:
            if sel.directives:
                return False
            if isinstance(sel, FieldNode):
                if sel.arguments:
                    return False
                key = sel.alias.value if sel.alias else sel.name.value
                entry = out.setdefault(key, (sel.name.value, []))
                if sel.selection_set is not None:
                    entry[1].append(sel.selection_set)
            elif isinstance(sel, InlineFragmentNode):
                condition = sel.type_condition.name.value if sel.type_condition else None
                if condition is not None and condition not in names:
                    continue
                if not walk(sel.selection_set):
                    return False
            elif isinstance(sel, FragmentSpreadNode):
                fragment = fragments.get(sel.name.value)
                if fragment is None:
                    return False
                if fragment.type_condition.name.value not in names:
                    continue
                if not walk(fragment.selection_set):
                    return False
            else:
                return False
        return True

    for selection_set in selection_sets:
        if selection_set is not None and not walk(selection_set):
            return None
    allowed = RENDERABLE[type_name]
    if any(name not in allowed for name, _ in out.values()):
        return None
    return out


class _Code:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.env: dict[str, Any] = {"Fallback": _Fallback, "gid": to_global_id, "unit_aliases": unit_aliases}
        self.count = 0

    def var(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def add(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def _build(field_nodes: Sequence[Any], fragments: dict[str, Any], whole_prices: bool) -> Callable[[Page], list[Any]] | None:
    connection = _collect([node.selection_set for node in field_nodes], fragments, "MaterialConnection")
    # One response key for the edges: the rendered list answers the connection's `edges`
    # attribute, which two aliases with their own selections would each read. (`pageInfo`,
    # `totalCount` and `__typename` are left to the object path.)
    if connection is None or sum(name == "edges" for name, _ in connection.values()) != 1:
        return None
    edge_sets = [s for name, sets in connection.values() if name == "edges" for s in sets]
    edge = _collect(edge_sets, fragments, "MaterialEdge")
    if edge is None:
        return None
    code = _Code()
    code.add(0, "def render(page):")
    code.add(1, "prices = page.current_prices")
    code.add(1, "out = []")
    code.add(1, "for index, row in enumerate(page.rows):")
    code.add(2, "e = {}")
    for key, (name, sets) in edge.items():
        if name == "__typename":
            code.add(2, f"e[{key!r}] = 'MaterialEdge'")
        elif name == "cursor":
            code.add(2, f"e[{key!r}] = page.cursor(index)")
        else:
            target = code.var("n")
            if not _material(code, 2, target, sets, fragments, whole_prices):
                return None
            code.add(2, f"e[{key!r}] = {target}")
    code.add(2, "out.append(e)")
    code.add(1, "return out")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(code.lines), "<rendered MaterialConnection.edges>", "exec"), code.env, namespace)
    return namespace["render"]


def _material(code: _Code, indent: int, target: str, sets: list[Any], fragments: dict[str, Any],
              whole_prices: bool) -> bool:
    fields = _collect(sets, fragments, "Material")
    if fields is None:
        return False
    code.add(indent, f"{target} = {{}}")
    for key, (name, subsets) in fields.items():
        k = repr(key)
        if name == "__typename":
            code.add(indent, f"{target}[{k}] = 'Material'")
        elif name == "id":
            code.add(indent, f"{target}[{k}] = gid('Material', row['id'])")
        elif name == "name":
            code.add(indent, "x = row['name']")
            code.add(indent, "if x is None:")
            code.add(indent + 1, "raise Fallback")
            code.add(indent, f"{target}[{k}] = x")
        elif name in ("sku", "description", "color"):
            code.add(indent, f"{target}[{k}] = row[{name!r}]")
        elif name == "unit":
            if not _unit(code, indent, f"{target}[{k}]", subsets, fragments):
                return False
        elif name == "category":
            if not _category(code, indent, f"{target}[{k}]", subsets, fragments):
                return False
        elif name == "currentPrices":
            if not _prices(code, indent, f"{target}[{k}]", subsets, fragments, whole_prices):
                return False
        else:
            return False
    return True


def _unit(code: _Code, indent: int, slot: str, sets: list[Any], fragments: dict[str, Any]) -> bool:
    fields = _collect(sets, fragments, "Unit")
    if fields is None:
        return False
    code.add(indent, "if row['unit_name'] is None:")
    code.add(indent + 1, "raise Fallback")  # the unit was not read along: its loader finds it
    literal = _literal(fields, "Unit", {
        "code": "row['unit_code']", "name": "row['unit_name']",
        "aliases": "unit_aliases(row)",
    })
    code.add(indent, f"{slot} = {literal}")
    return True


def _category(code: _Code, indent: int, slot: str, sets: list[Any], fragments: dict[str, Any]) -> bool:
    fields = _collect(sets, fragments, "Category")
    if fields is None:
        return False
    code.add(indent, "if row['category_id'] is None:")
    code.add(indent + 1, f"{slot} = None")
    code.add(indent, "else:")
    code.add(indent + 1, "if row['category_name'] is None:")
    code.add(indent + 2, "raise Fallback")
    literal = _literal(fields, "Category", {"id": "gid('Category', row['category_id'])", "name": "row['category_name']"})
    code.add(indent + 1, f"{slot} = {literal}")
    return True


def _prices(code: _Code, indent: int, slot: str, sets: list[Any], fragments: dict[str, Any],
            whole_prices: bool) -> bool:
    fields = _collect(sets, fragments, "Price")
    if fields is None or not all(name in (_PRICE_WHOLE if whole_prices else _PRICE_SUMMARY)
                                 for name, _ in fields.values()):
        return False
    code.add(indent, "if prices is None:")
    code.add(indent + 1, "raise Fallback")
    items = code.var("ps")
    code.add(indent, f"{items} = []")
    code.add(indent, "for p in prices.get(row['id'], ()):")
    code.add(indent + 1, "q = {}")
    for key, (name, subsets) in fields.items():
        k = repr(key)
        if name == "__typename":
            code.add(indent + 1, f"q[{k}] = 'Price'")
        elif name == "currency":
            code.add(indent + 1, f"q[{k}] = p['currency']")
        elif name == "stock":
            code.add(indent + 1, f"q[{k}] = p['stock']")
        elif name == "supplier":
            supplier = _collect(subsets, fragments, "Supplier")
            if supplier is None:
                return False
            code.add(indent + 1, "if p['supplier_name'] is None:")
            code.add(indent + 2, "raise Fallback")
            literal = _literal(supplier, "Supplier", {"id": "gid('Supplier', p['supplier_id'])",
                                                      "name": "p['supplier_name']"})
            code.add(indent + 1, f"q[{k}] = {literal}")
        else:  # Decimals, as the Decimal scalar serializes them
            column = {"unitPrice": "unit_price", "unitCalcPrice": "unit_calc_price", "buyPrice": "buy_price",
                      "salePrice": "sale_price"}[name]
            code.add(indent + 1, f"x = p[{column!r}]")
            if name == "unitPrice":
                code.add(indent + 1, "if x is None:")
                code.add(indent + 2, "raise Fallback")
                code.add(indent + 1, f"q[{k}] = str(x)")
            else:
                code.add(indent + 1, f"q[{k}] = None if x is None else str(x)")
    code.add(indent + 1, f"{items}.append(q)")
    code.add(indent, f"{slot} = {items}")
    return True


def _literal(fields: Fields, type_name: str, values: dict[str, str]) -> str:
    """A dict display of `fields` by response key: `__typename` is the type's name, any other
    field the expression `values` gives for it."""
    parts = [f"{key!r}: {type_name!r}" if name == "__typename" else f"{key!r}: {values[name]}"
             for key, (name, _) in fields.items()]
    return "{" + ", ".join(parts) + "}"


def render_edges(renderer: Callable[[Page], list[Any]], page: Page) -> Rendered | None:
    """The page's edges rendered, or None when a row needs the object path."""
    try:
        return Rendered(renderer(page))
    except (_Fallback, KeyError):  # KeyError: a column the page did not read (its read plan's call)
        return None
