"""Hostile-query limits, authorization, cost and rate limits: checked before anything executes.

One `Guard` serves both request paths: the lean path (middleware.lean_queries) calls
`limit_query`, adds `rules` to its validation and calls `admit` before it executes or
serves a stored response; Strawberry's path (multipart, websockets, mutations, everything
else) runs the same checks through `ProtectionExtension`. A refusal is a GraphQL error
whose `extensions.code` says which limit (QUERY_LIMIT, FORBIDDEN, RATE_LIMITED); an
over-budget request is an HTTP 429 with Retry-After. `refusals()` counts them by reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import (
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    ValidationRule,
    get_operation_ast,
)
from graphql.validation import NoSchemaIntrospectionCustomRule
from limits import RateLimitItem
from strawberry.extensions import SchemaExtension

from backends.api_keys import KeyRejected, Principal
from backends.budgets import Budgets, Debit, parse_rate
from backends.persisted_queries import sha256_hex
from middleware.auth import REFUSALS, count_refusal
from middleware.cost import CostModel, operation_depth

ADMIN = "admin"


def refusals() -> dict[str, int]:
    """Refused requests by reason since start (metrics read this)."""
    return dict(REFUSALS)


@dataclass(frozen=True)
class QueryLimits:
    """Hostile-query limits (MAX_DEPTH, MAX_ALIASES, MAX_TOKENS, MAX_QUERY_CHARS, MAX_PAGE_SIZE, MAX_COST)."""

    max_depth: int = 12
    max_aliases: int = 50
    max_tokens: int = 2000
    max_chars: int = 20_000
    max_page_size: int = 100
    max_cost: int = 5000
    introspection: bool = True


class Refusal(GraphQLError):
    """A request refused before execution; `status` and `headers` go on the HTTP response."""

    def __init__(self, code: str, message: str, *, status: int = 200, headers: Mapping[str, str] | None = None,
                 nodes: Any = None, **extensions: Any) -> None:
        super().__init__(message, nodes, extensions={"code": code, **extensions})
        self.status = status
        self.headers = dict(headers or {})
        self.reason = extensions.get("limit", code.lower()) if code == "QUERY_LIMIT" else code.lower()

    def counted(self) -> Refusal:
        """Counts the refusal as it is answered (validation verdicts are cached: not when made)."""
        count_refusal(self.reason)
        return self


ANALYSES = 4096  # operations (with their variables) whose analysis is remembered


@dataclass(frozen=True)
class Analysis:
    scope: str
    pages: tuple[tuple[str, int], ...]
    cost: int
    rated: tuple[tuple[str, str], ...]  # (Type.field, its declared rate) of rate-limited root fields


@dataclass
class Admission:
    """An admitted operation: its cost and the budget's state after the debit (None: no rate limits)."""

    cost: int
    debit: Debit | None = None
    extensions: dict[str, Any] = field(default_factory=dict)

    def cost_extension(self) -> dict[str, Any] | None:
        if self.debit is None:
            return None
        return {"requested": self.cost, "remaining": self.debit.remaining, "budget": self.debit.budget,
                "resetSeconds": self.debit.reset_s, "shared": self.debit.shared}


class Guard:
    """The checks of one server: limits, scopes, cost, budgets (None: no rate limiting)."""

    def __init__(self, limits: QueryLimits, *, budgets: Budgets | None = None,
                 tiers: Mapping[str, RateLimitItem] | None = None, schema: Any = None,
                 allowlisted: Callable[[str], Awaitable[bool]] | None = None) -> None:
        self.limits = limits
        self.allowlisted = allowlisted  # ALLOWLIST mode: sha256 of the query text -> registered?
        self.budgets = budgets
        self.tiers = dict(tiers or {})
        self.costs: CostModel = CostModel(schema) if schema is not None else None  # type: ignore[assignment]
        self.rules: tuple[type[ValidationRule], ...] = (_depth_rule(limits.max_depth), _alias_rule(limits.max_aliases))
        if not limits.introspection:
            self.rules += (NoSchemaIntrospectionCustomRule,)
        self._field_rates: dict[str, RateLimitItem] = {}
        self._analyses: dict[Any, tuple[Any, Analysis]] = {}

    def bind(self, schema: Any) -> Guard:
        """The graphql-core schema whose resolvers' metadata declare costs, limits and scopes
        (the guard's extension is part of that schema, so it is bound after the schema is built)."""
        self.costs = CostModel(schema)
        return self

    def limit_query(self, query: str) -> None:
        """Refuses a document too long to be worth parsing (a cheap check before the token limit)."""
        if len(query) > self.limits.max_chars:
            raise Refusal("QUERY_LIMIT", f"the query is {len(query)} characters long; at most "
                          f"{self.limits.max_chars} are accepted", limit="chars", max=self.limits.max_chars)

    def required_scope(self, document: Any, operation: OperationDefinitionNode) -> str:
        needed = "write" if operation.operation is OperationType.MUTATION else "read"
        for _, policy in self.costs.root_policies(document, operation):
            if policy.scope == ADMIN:
                return ADMIN
        return needed

    def analyse(self, document: Any, operation: OperationDefinitionNode,
                variables: Mapping[str, Any] | None) -> Analysis:
        """Scope, page sizes, cost and rate-limited root fields of an operation with its variables;
        remembered per parsed document (the lean path and ParserCache hand the same object back
        for the same text) and variables, so a repeated request does not walk its document again."""
        try:
            key: Any = (id(document), id(operation),
                        orjson.dumps(variables, option=orjson.OPT_SORT_KEYS) if variables else b"")
        except TypeError:  # variables that are not plain JSON (an upload): walk every time
            key = None
        entry = self._analyses.get(key) if key is not None else None
        if entry is not None and entry[0] is document:
            return entry[1]
        analysis = Analysis(
            scope=self.required_scope(document, operation),
            pages=tuple(self.costs.page_sizes(document, operation, variables)),
            cost=self.costs.cost(document, operation, variables),
            rated=tuple((name, policy.rate_limit) for name, policy in self.costs.root_policies(document, operation)
                        if policy.rate_limit is not None))
        if key is not None:
            if len(self._analyses) >= ANALYSES:
                self._analyses.pop(next(iter(self._analyses)))
            self._analyses[key] = (document, analysis)
        return analysis

    async def admit(self, document: Any, operation: OperationDefinitionNode, variables: Mapping[str, Any] | None,
                    principal: Principal | None, query: str | None = None) -> Admission:
        """Allow-list, authorization, page sizes, cost, then the budget debit; raises Refusal."""
        if principal is None:
            raise Refusal("FORBIDDEN", "no caller: requests need to pass through the authentication middleware")
        if self.allowlisted is not None and (query is None or not await self.allowlisted(sha256_hex(query))):
            raise Refusal("PERSISTED_QUERY_NOT_ALLOWED", "only registered operations run on this server: send the "
                          "sha256Hash of a registered query in extensions.persistedQuery", status=400)
        analysis = self.analyse(document, operation, variables)
        scope = analysis.scope
        if not principal.allows(scope):
            who = "anonymous callers" if principal.anonymous else f"the API key {principal.actor}"
            raise Refusal("FORBIDDEN", f"this operation needs the '{scope}' scope, which {who} do not have"
                          if principal.anonymous else
                          f"this operation needs the '{scope}' scope, which {who} does not have",
                          missingScope=scope)
        for name, size in analysis.pages:
            if size > self.limits.max_page_size:
                raise Refusal("VALIDATION", f"{name}: must be at most {self.limits.max_page_size} (got {size})",
                              field=[name])
        cost = analysis.cost
        if cost > self.limits.max_cost:
            raise Refusal("QUERY_LIMIT", f"the query would cost {cost} points; at most {self.limits.max_cost} "
                          "are allowed per request (ask for smaller pages or fewer nested lists)",
                          limit="cost", max=self.limits.max_cost, cost=cost)
        admission = Admission(cost)
        if self.budgets is None:
            return admission
        item = self.tiers.get(principal.tier) or self.tiers.get("standard")
        if item is not None:
            debit = await self.budgets.debit(f"{principal.tier}:{principal.rate_key}", item, max(cost, 1))
            admission.debit = debit
            if not debit.allowed:
                raise Refusal("RATE_LIMITED", f"over budget: this request costs {cost} points and "
                              f"{debit.remaining} of {debit.budget} are left in this window; retry in "
                              f"{debit.reset_s} s", status=429, headers={"Retry-After": str(debit.reset_s)},
                              cost=cost, retryAfter=debit.reset_s)
        for name, rate_limit in analysis.rated:
            rate = self._field_rates.get(name)
            if rate is None:
                rate = self._field_rates[name] = parse_rate(rate_limit, name)
            debit = await self.budgets.debit(f"field:{name}:{principal.rate_key}", rate, 1)
            if not debit.allowed:
                raise Refusal("RATE_LIMITED", f"{name} may be called {rate_limit}; retry in {debit.reset_s} s",
                              status=429, headers={"Retry-After": str(debit.reset_s)}, field=name,
                              retryAfter=debit.reset_s)
        return admission


def _depth_rule(max_depth: int) -> type[ValidationRule]:
    class MaxDepthRule(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            depth = operation_depth(self.context.document, node)
            if depth > max_depth:
                self.report_error(Refusal("QUERY_LIMIT", f"the query nests fields {depth} deep; at most {max_depth} "
                                          "levels are allowed", nodes=[node], limit="depth", max=max_depth))

    return MaxDepthRule


def _alias_rule(max_aliases: int) -> type[ValidationRule]:
    class MaxAliasesRule(ValidationRule):
        def __init__(self, context: Any) -> None:
            super().__init__(context)
            self.count = 0

        def enter_field(self, node: FieldNode, *_: Any) -> None:
            if node.alias is not None:
                self.count += 1

        def leave_document(self, node: Any, *_: Any) -> None:
            if self.count > max_aliases:
                self.report_error(Refusal("QUERY_LIMIT", f"the query has {self.count} aliases; at most {max_aliases} "
                                          "are allowed", limit="aliases", max=max_aliases))

    return MaxAliasesRule


# (operation, variables, outcome, detail, actor) -> writes an audit row (backends.audit.record)
AuditRecord = Callable[[str, Mapping[str, Any], str, Mapping[str, Any], str], Awaitable[None]]


def protection_extension(guard: Guard, audit: AuditRecord | None = None) -> type[SchemaExtension]:
    """The guard as a Strawberry extension, for requests that do not take the lean path.

    A mutation refused here (a missing scope, over budget, over a limit) never runs, so its
    resolver writes no audit row; with `audit`, the attempt is recorded here instead, one row
    per root field, outcome `rejected`, with the refusal's code and message."""

    class ProtectionExtension(SchemaExtension):
        def on_operation(self) -> Iterator[None]:
            self.admission: Admission | None = None
            query = self.execution_context.query
            if query is not None:  # before any extension parses it (ParserCache)
                try:
                    guard.limit_query(query)
                except Refusal as refusal:
                    raise refusal.counted() from None
            self.execution_context.parse_options["max_tokens"] = guard.limits.max_tokens
            self.execution_context.validation_rules = (*self.execution_context.validation_rules, *guard.rules)
            yield

        def on_validate(self) -> Iterator[None]:
            yield
            for error in self.execution_context.pre_execution_errors or ():
                if isinstance(error, Refusal):
                    error.counted()

        async def on_execute(self) -> Any:
            ctx = self.execution_context
            operation = get_operation_ast(ctx.graphql_document, ctx.operation_name)
            context = ctx.context
            if operation is not None:
                refresh = getattr(context, "refresh_principal", None)
                if refresh is not None:
                    try:
                        await refresh()
                    except KeyRejected as exc:
                        raise Refusal("UNAUTHENTICATED", str(exc)).counted() from None
                try:
                    self.admission = await guard.admit(ctx.graphql_document, operation, ctx.variables,
                                                       getattr(context, "principal", None), ctx.query)
                except Refusal as refusal:
                    refusal.counted()
                    if audit is not None and operation.operation is OperationType.MUTATION:
                        principal = getattr(context, "principal", None)
                        actor = principal.actor if principal is not None else "anonymous"
                        detail = {"refused": (refusal.extensions or {}).get("code"), "message": refusal.message}
                        for selection in operation.selection_set.selections:
                            name = getattr(getattr(selection, "name", None), "value", None)
                            if name is not None:
                                await audit(name, ctx.variables or {}, "rejected", detail, actor)
                    response = getattr(context, "response", None)
                    if refusal.status != 200 and response is not None and hasattr(response, "headers"):
                        response.status_code = refusal.status
                        for name, value in refusal.headers.items():
                            response.headers[name] = value
                    raise
            yield

        def get_results(self) -> dict[str, Any]:
            admission = getattr(self, "admission", None)
            cost = admission.cost_extension() if admission is not None else None
            return {"cost": cost} if cost is not None else {}

    return ProtectionExtension


def tiers_of(text: str) -> dict[str, RateLimitItem]:
    """RATE_TIERS: `name=rate` entries separated by `;` (e.g. "anonymous=2000/minute;standard=20000/minute")."""
    tiers: dict[str, RateLimitItem] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        name, sep, rate = entry.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"RATE_TIERS: {entry!r} is not name=rate (e.g. standard=20000/minute)")
        tiers[name.strip()] = parse_rate(rate.strip(), f"RATE_TIERS {name.strip()}")
    return tiers
