"""The whole (filtered) catalog in id order, a batch per statement: exportMaterials' reads."""

from __future__ import annotations

from typing import Any

from backends.catalog import (
    MATERIAL_DETAIL_COLUMNS,
    MATERIAL_KEY_COLUMNS,
    MATERIAL_TIME_COLUMNS,
    MaterialFilterSpec,
    MaterialReadPlan,
    _filter_conditions,
)
from backends.sql import SqlParams


def export_batch_query(spec: MaterialFilterSpec, size: int, plan: MaterialReadPlan) -> tuple[str, list[Any]]:
    """SQL for the `size` materials after an id (the last argument, appended by the caller),
    with the column groups `plan` asks for (`plan.details`, `plan.timestamps`).

    Keyset on the primary key rather than a cursor held open in a transaction: a slow client
    then holds no pooled connection and no snapshot between batches, and each batch is an
    index range scan however far the export is. The price: a row changed during the export
    is read as it is when its batch is read (a snapshot would have read it as at the start).
    Categories and units are not joined: the batch's few distinct ones come from their
    DataLoaders (cached), which costs less than decoding their columns on every row.
    """
    params = SqlParams()
    where = _filter_conditions(spec, params)
    after = f"${len(params.values) + 1}"
    columns = [MATERIAL_KEY_COLUMNS]
    if plan.details:
        columns.append(MATERIAL_DETAIL_COLUMNS)
    if plan.timestamps:
        columns.append(MATERIAL_TIME_COLUMNS)
    return (
        f"SELECT {', '.join(columns)} FROM materials m "
        f"WHERE {' AND '.join(where)} AND m.id > {after}::bigint ORDER BY m.id LIMIT {int(size)}",
        params.values,
    )
