"""The orders events: parsed and validated in one pass, so the handler gets typed records."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from ..handlers import InvalidEvent, json_deserializer

STATUS_BY_TYPE = {
    "order_created": "created",
    "order_paid": "paid",
    "order_shipped": "shipped",
    "order_cancelled": "cancelled",
}
EVENT_TYPES = frozenset({*STATUS_BY_TYPE, "item_added"})
_MAX_AMOUNT = Decimal("999999999999.99")  # numeric(14,2)


class OrderEvent(NamedTuple):
    type: str
    order_id: str
    ts: datetime
    customer_id: str | None = None
    quantity: int = 0
    unit_price: Decimal = Decimal(0)
    amount: Decimal | None = None


def _text(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"field {name!r} must be a non-empty string")
    return value


# The common shape of a valid amount, checked in C; anything else takes the slow path below,
# which accepts the same values and says what is wrong with the others.
_PLAIN_MONEY = re.compile(r"\d{1,12}(?:\.\d{1,2})?")


def _money(doc: dict[str, Any], name: str) -> Decimal:
    raw = doc.get(name)
    if not isinstance(raw, str):
        raise InvalidEvent(f"field {name!r} must be a decimal string")
    if _PLAIN_MONEY.fullmatch(raw):
        return Decimal(raw)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise InvalidEvent(f"field {name!r} is not a decimal: {raw!r}") from None
    if not value.is_finite() or value < 0 or value > _MAX_AMOUNT:
        raise InvalidEvent(f"field {name!r} out of range: {raw!r}")
    if value.as_tuple().exponent < -2:  # type: ignore[operator]
        raise InvalidEvent(f"field {name!r} has more than 2 decimals: {raw!r}")
    return value


def _timestamp(doc: dict[str, Any]) -> datetime:
    raw = doc.get("ts")
    if not isinstance(raw, str):
        raise InvalidEvent("field 'ts' must be an ISO-8601 string")
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidEvent(f"field 'ts' is not ISO-8601: {raw!r}") from None
    if ts.tzinfo is None:
        raise InvalidEvent(f"field 'ts' has no time zone: {raw!r}")
    return ts


def parse_order_event(raw: bytes | None) -> OrderEvent:
    """Deserializer of the orders domain: JSON bytes -> OrderEvent, or a dead-letter error."""
    doc = json_deserializer(raw)
    if not isinstance(doc, dict):
        raise InvalidEvent("event must be a JSON object")
    kind = doc.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise InvalidEvent(f"unknown event type {kind!r}")
    order_id = _text(doc, "order_id")
    ts = _timestamp(doc)
    if kind == "order_created":
        return OrderEvent(kind, order_id, ts, customer_id=_text(doc, "customer_id"))
    if kind == "item_added":
        _text(doc, "sku")
        quantity = doc.get("quantity")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity <= 0:
            raise InvalidEvent(f"field 'quantity' must be a positive integer, got {quantity!r}")
        if quantity > 1_000_000:
            raise InvalidEvent(f"field 'quantity' out of range: {quantity}")
        return OrderEvent(
            kind, order_id, ts, quantity=quantity, unit_price=_money(doc, "unit_price")
        )
    if kind == "order_paid":
        return OrderEvent(kind, order_id, ts, amount=_money(doc, "amount"))
    if kind == "order_cancelled":
        _text(doc, "reason")
    return OrderEvent(kind, order_id, ts)
