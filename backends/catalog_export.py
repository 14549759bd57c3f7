"""The whole (filtered) catalog in id order, a batch per statement: exportMaterials' reads."""

from __future__ import annotations

from typing import Any

from backends.catalog import (
    MATERIAL_COLUMNS,
    MATERIAL_COMPANION_COLUMNS,
    MATERIAL_COMPANION_JOINS,
    MaterialFilterSpec,
    _filter_conditions,
)
from backends.sql import SqlParams


def export_batch_query(spec: MaterialFilterSpec, size: int) -> tuple[str, list[Any]]:
    """SQL for the `size` materials after an id (the last argument, appended by the caller).

    Keyset on the primary key rather than a cursor held open in a transaction: a slow client
    then holds no pooled connection and no snapshot between batches, and each batch is an
    index range scan however far the export is. The price: a row changed during the export
    is read as it is when its batch is read (a snapshot would have read it as at the start).
    """
    params = SqlParams()
    where = _filter_conditions(spec, params)
    after = f"${len(params.values) + 1}"
    return (
        f"SELECT {MATERIAL_COLUMNS}, {MATERIAL_COMPANION_COLUMNS} FROM materials m {MATERIAL_COMPANION_JOINS} "
        f"WHERE {' AND '.join(where)} AND m.id > {after}::bigint ORDER BY m.id LIMIT {int(size)}",
        params.values,
    )
