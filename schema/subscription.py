"""The Subscription root: live price updates and the catalog export."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from decimal import Decimal
from typing import Any

import strawberry

from backends.catalog import MaterialReadPlan
from backends.price_events import previous_unit_price, price_row
from resolvers import catalog as catalog_resolvers
from resolvers import subscriptions as subscription_resolvers
from resolvers.context import Context
from schema.material import Material, MaterialFilter
from schema.prefetch import fields_of, prefetch, selections_under
from schema.price import Price, PriceList
from schema.query import DETAIL_FIELDS, TIME_FIELDS


@strawberry.type
class PriceEvent:
    cursor: str = strawberry.field(description="Pass as `after` to resume without losing events.")
    price: Price
    previous_unit_price: Decimal | None
    at: datetime
    material_id: strawberry.Private[int]
    # Every subscriber of one event gets an equal PriceEvent: subscribers with the same parsed
    # operation and variables share one execution of it (schema.execution).
    shared_result_key: strawberry.Private[int | None] = None

    @strawberry.field
    def material(self, info: strawberry.Info[Context, None]) -> Material:
        return Price.RELATIONS["material"].resolve(self.price, info.context)


@strawberry.type
class MaterialBatch:
    sequence: int
    materials: list[Material]
    done: bool


@strawberry.type
class ImportProgress:
    price_list: PriceList
    processed_rows: int
    total_rows: int | None
    done: bool

    @classmethod
    def running(cls, state: dict[str, Any]) -> ImportProgress:
        """From a progress message: the list is not committed yet, so it is described by the message."""
        uploaded = datetime.fromisoformat(state["uploadedAt"])
        row = {"id": state["priceListId"], "supplier_id": state["supplierId"], "version": state["version"],
               "status": "PROCESSING", "filename": state.get("filename"), "checksum": state["checksum"],
               "uploaded_at": uploaded, "effective_at": datetime.fromisoformat(state["effectiveAt"]),
               "row_count": state["processedRows"], "rejected_count": 0, "archived_at": None}
        return cls(price_list=PriceList.from_row(row), processed_rows=state["processedRows"],  # type: ignore[arg-type]
                   total_rows=state.get("totalRows"), done=False)

    @classmethod
    def finished(cls, row: Any) -> ImportProgress:
        rows = row["row_count"] + row["rejected_count"]
        return cls(price_list=PriceList.from_row(row), processed_rows=rows, total_rows=rows, done=True)


@strawberry.type
class Subscription:
    @strawberry.subscription(description=(
        "Price changes as they commit, filtered (categoryId includes subcategories). With `after` (the "
        "cursor of the last event received) the missed events come first, then live ones, none twice."))
    async def price_updates(
        self,
        info: strawberry.Info[Context, None],
        material_ids: list[strawberry.ID] | None = None,
        category_id: strawberry.ID | None = None,
        supplier_id: strawberry.ID | None = None,
        after: str | None = None,
    ) -> AsyncGenerator[PriceEvent, None]:
        ctx = info.context
        flt = subscription_resolvers.price_filter(material_ids, category_id, supplier_id)
        events = subscription_resolvers.price_updates(ctx, flt, after)
        try:
            async for event in events:
                ctx.renew(event.id)
                yield PriceEvent(cursor=subscription_resolvers.encode_event_cursor(event.id),
                                 price=Price.from_row(price_row(event)),  # type: ignore[arg-type]
                                 previous_unit_price=previous_unit_price(event), at=event.created_at,
                                 material_id=event.entity_id or 0, shared_result_key=event.id)
        finally:
            await events.aclose()

    # The whole catalog for one debit (middleware.cost): priced like the reads it replaces and
    # limited per caller, so exports cannot be repeated back to back for a few points each.
    @strawberry.subscription(description=(
        "The catalog (filtered) in batches of `batchSize` materials in id order; the last batch has "
        "done: true. The next batch is read only when the previous one was sent."),
        metadata={"cost": 1000, "rate_limit": "6/minute"})
    async def export_materials(
        self, info: strawberry.Info[Context, None], filter: MaterialFilter | None = None, batch_size: int | None = 1000,
    ) -> AsyncGenerator[MaterialBatch, None]:
        ctx = info.context
        size = subscription_resolvers.batch_size(ctx, batch_size)
        spec = catalog_resolvers.filter_spec(filter)
        await catalog_resolvers.check_unit_filter(ctx, spec)
        selections = selections_under(info, "materials")
        selected = {f.name for f in fields_of(selections, Material.TYPE_NAMES)}
        plan = MaterialReadPlan(details=bool(selected & DETAIL_FIELDS), timestamps=bool(selected & TIME_FIELDS),
                                category=False, unit=False)
        batches = subscription_resolvers.export_batches(ctx, spec, size, plan)
        sequence = 0
        try:
            async for rows in batches:
                ctx.renew()  # loaders of one batch only: memory stays flat over the whole catalog
                materials = [Material.from_row(r) for r in rows]
                await prefetch(ctx, materials, selections)
                sequence += 1
                yield MaterialBatch(sequence=sequence, materials=materials, done=len(rows) < size)
        finally:
            await batches.aclose()

    @strawberry.subscription(description=(
        "Progress of the import of a price list (from any instance): rows read so far while it runs "
        "(the list's status PROCESSING), then one message with done: true once it committed. An id "
        "nobody is importing or has imported gets NOT_FOUND; a failed import, IMPORT_FAILED."))
    async def import_progress(
        self, info: strawberry.Info[Context, None], price_list_id: strawberry.ID,
    ) -> AsyncGenerator[ImportProgress, None]:
        from resolvers.ids import decode_id

        ctx = info.context
        updates = subscription_resolvers.import_progress(ctx, decode_id(price_list_id, "PriceList", ["priceListId"]))
        try:
            async for state, row in updates:
                ctx.renew()
                yield ImportProgress.running(state) if row is None else ImportProgress.finished(row)  # type: ignore[arg-type]
        finally:
            await updates.aclose()

