"""The audit trail: one row per mutation, written after it ends (so failures are kept too)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from backends.postgres import PostgresBackend
from backends.writes import UNSET

log = logging.getLogger(__name__)
MAX_TEXT = 200  # longer strings in the variables are cut: the audit is a summary, not a copy


def summarise(value: Any) -> Any:
    """Variables as JSON-safe data without file contents or long texts."""
    if isinstance(value, Mapping):
        return {str(k): summarise(v) for k, v in value.items() if not _unset(v)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # GraphQL input objects
        return {f.name: summarise(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not _unset(getattr(value, f.name))}
    if isinstance(value, list | tuple):
        head = [summarise(v) for v in value[:20]]
        return head + ([f"... {len(value) - 20} more"] if len(value) > 20 else [])
    if hasattr(value, "filename") and hasattr(value, "read"):  # an upload: its name, never its bytes
        return {"file": getattr(value, "filename", None), "contentType": getattr(value, "content_type", None)}
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "..."
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)


def _unset(value: Any) -> bool:
    """Input fields the client did not send (Strawberry's UNSET, backends.writes.UNSET)."""
    return type(value).__name__ == "UnsetType" or value is UNSET


async def record(pg: PostgresBackend, operation: str, variables: Mapping[str, Any], outcome: str,
                 detail: Mapping[str, Any] | None = None, actor: str = "anonymous") -> None:
    """Writes the audit row; a failure to write it is logged, never hidden from the caller's result."""
    try:
        await pg.execute(
            "INSERT INTO audit_log (actor, operation, variables, outcome, detail) VALUES ($1, $2, $3, $4, $5)",
            actor, operation, summarise(variables), outcome, None if detail is None else summarise(detail))
    except Exception:  # the mutation's own outcome stands; the gap is logged loudly
        log.exception("could not write the audit record of %s", operation)
