"""The audit trail: one row per mutation, written after it ends (so failures are kept too)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from backends.postgres import PostgresBackend

log = logging.getLogger(__name__)
MAX_TEXT = 200  # longer strings in the variables are cut: the audit is a summary, not a copy


def summarise(value: Any) -> Any:
    """Variables as JSON-safe data, long texts and lists cut short. Callers pass plain data:
    the GraphQL layer turns input objects and uploads into mappings first (never file bytes)."""
    if isinstance(value, Mapping):
        return {str(k): summarise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        head = [summarise(v) for v in value[:20]]
        return head + ([f"... {len(value) - 20} more"] if len(value) > 20 else [])
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "..."
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)


async def record(pg: PostgresBackend, operation: str, variables: Mapping[str, Any], outcome: str,
                 detail: Mapping[str, Any] | None = None, actor: str = "anonymous") -> None:
    """Writes the audit row; a failure to write it is logged, never hidden from the caller's result."""
    try:
        await pg.execute(
            "INSERT INTO audit_log (actor, operation, variables, outcome, detail) VALUES ($1, $2, $3, $4, $5)",
            actor, operation, summarise(variables), outcome, None if detail is None else summarise(detail))
    except Exception:  # the mutation's own outcome stands; the gap is logged loudly
        log.exception("could not write the audit record of %s", operation)


async def read(pg: PostgresBackend, *, operation: str | None = None, actor: str | None = None,
               since: Any = None, until: Any = None, before_id: int | None = None, limit: int = 20) -> list[Any]:
    """Audit rows newest first, filtered; `before_id` continues a page (keyset on id)."""
    return await pg.fetch(
        "SELECT id, at, actor, operation, variables, outcome, detail FROM audit_log "
        "WHERE ($1::text IS NULL OR operation = $1) AND ($2::text IS NULL OR actor = $2) "
        "AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::timestamptz IS NULL OR at < $4) "
        "AND ($5::bigint IS NULL OR id < $5) ORDER BY id DESC LIMIT $6",
        operation, actor, since, until, before_id, limit)
