"""`price.changed` outbox events as subscriptions see them: their filter and their price row.

An import writes each event with everything a subscriber filters on or is answered with
(backends.imports): the material, the supplier, the category path at the time of the
change, the previous unit price and the new price row. Filtering and answering an event
therefore costs no query, however many subscribers there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from backends.outbox_reader import OutboxEvent

PRICE_CHANGED = "price.changed"


@dataclass(frozen=True)
class PriceEventFilter:
    """priceUpdates' arguments with ids decoded; None means "any"."""

    material_ids: frozenset[int] | None = None
    category_id: int | None = None  # the category or any of its subcategories
    supplier_id: int | None = None

    def accepts(self, event: OutboxEvent) -> bool:
        if event.topic != PRICE_CHANGED:
            return False
        payload = event.payload
        if payload.get("price") is None:  # the material left the supplier's list: no price to send
            return False
        if self.material_ids is not None and event.entity_id not in self.material_ids:
            return False
        if self.supplier_id is not None and payload.get("supplierId") != self.supplier_id:
            return False
        if self.category_id is not None and self.category_id not in (payload.get("categoryPath") or ()):
            return False
        return True


def price_row(event: OutboxEvent) -> dict[str, Any]:
    """The new price of a price.changed event, as the columns of a `prices` row."""
    price = event.payload["price"]
    return {
        "id": price["id"], "material_id": event.entity_id, "supplier_id": event.payload["supplierId"],
        "price_list_id": event.payload["priceListId"], "unit_price": Decimal(price["unitPrice"]),
        "currency": price["currency"], "calc_unit_code": price.get("calcUnit"),
        "unit_calc_price": _decimal(price.get("unitCalcPrice")), "buy_price": _decimal(price.get("buyPrice")),
        "sale_price": _decimal(price.get("salePrice")), "stock": price.get("stock"),
        "price_date": date.fromisoformat(price["priceDate"]) if price.get("priceDate") else None,
        "valid_from": datetime.fromisoformat(price["validFrom"]).astimezone(UTC),
    }


def previous_unit_price(event: OutboxEvent) -> Decimal | None:
    return _decimal(event.payload.get("oldUnitPrice"))


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)
