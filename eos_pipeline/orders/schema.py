"""The orders events: parsed and validated in one pass, so the handler gets typed records.

Two parsers share one contract. The fast one is msgspec decoding straight into the event
structs (one C call a record, the common case); any record it does not accept goes to the
careful one, written out field by field, which accepts what the contract allows (an ISO-8601
timestamp msgspec's RFC 3339 parser refuses, say) and names what is wrong with the rest.
The fast parser accepts nothing the careful one refuses and yields the same event, so a
record's fate depends on the contract alone (one nuance: beyond microseconds, the fast parser
rounds a timestamp, as PostgreSQL does, where the careful one truncates).
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, TypeAlias

import msgspec
from msgspec import Meta, Struct

from ..handlers import InvalidEvent, json_deserializer

STATUS_BY_TYPE = {
    "order_created": "created",
    "order_paid": "paid",
    "order_shipped": "shipped",
    "order_cancelled": "cancelled",
}
_MAX_AMOUNT = Decimal("999999999999.99")  # numeric(14,2)
_MAX_QUANTITY = 1_000_000


class Money(Decimal):
    """A non-negative amount with at most 2 decimals that fits numeric(14,2)."""


_Text = Annotated[str, Meta(min_length=1)]
_Timestamp = Annotated[datetime, Meta(tz=True)]
_Quantity = Annotated[int, Meta(gt=0, le=_MAX_QUANTITY)]


class _Base(Struct, tag_field="type", frozen=True, gc=False):
    """Fields every event has. gc=False: events hold no cycles, and a batch holds many."""

    type: ClassVar[str]
    order_id: _Text
    ts: _Timestamp


class OrderCreated(_Base, tag="order_created", frozen=True, gc=False):
    type = "order_created"
    customer_id: _Text


class ItemAdded(_Base, tag="item_added", frozen=True, gc=False):
    type = "item_added"
    sku: _Text
    quantity: _Quantity
    unit_price: Money


class OrderPaid(_Base, tag="order_paid", frozen=True, gc=False):
    type = "order_paid"
    amount: Money


class OrderShipped(_Base, tag="order_shipped", frozen=True, gc=False):
    type = "order_shipped"


class OrderCancelled(_Base, tag="order_cancelled", frozen=True, gc=False):
    type = "order_cancelled"
    reason: _Text


OrderEvent: TypeAlias = OrderCreated | ItemAdded | OrderPaid | OrderShipped | OrderCancelled
EVENT_CLASSES: dict[str, type[OrderEvent]] = {
    c.type: c for c in (OrderCreated, ItemAdded, OrderPaid, OrderShipped, OrderCancelled)
}
EVENT_TYPES = frozenset(EVENT_CLASSES)

# The common shape of a valid amount, checked in C; anything else takes the careful path,
# which accepts the same values and says what is wrong with the others.
_PLAIN_MONEY = re.compile(r"\d{1,12}(?:\.\d{1,2})?")


def _money_hook(kind: type, obj: Any) -> Any:
    if kind is Money and type(obj) is str and _PLAIN_MONEY.fullmatch(obj):
        return Money(obj)
    raise ValueError("not a plain amount")  # the careful parser says why


_fast: msgspec.json.Decoder[OrderEvent] = msgspec.json.Decoder(OrderEvent, dec_hook=_money_hook)


def parse_order_event(raw: bytes | None) -> OrderEvent:
    """Deserializer of the orders domain: JSON bytes -> an event struct, or a dead-letter
    error (UndecodableEvent, InvalidJson, InvalidEvent)."""
    if raw is not None:
        try:
            return _fast.decode(raw)
        except (msgspec.DecodeError, ValueError):  # ValueError: text that is not UTF-8
            pass
    return _parse_carefully(raw)


# -- the careful parser ---------------------------------------------------------------------
def _text(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"field {name!r} must be a non-empty string")
    return value


def _money(doc: dict[str, Any], name: str) -> Money:
    raw = doc.get(name)
    if not isinstance(raw, str):
        raise InvalidEvent(f"field {name!r} must be a decimal string")
    try:
        value = Money(raw)
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
        ts = datetime.fromisoformat(raw.upper())  # RFC 3339 allows a lower-case t and z
    except ValueError:
        raise InvalidEvent(f"field 'ts' is not ISO-8601: {raw!r}") from None
    if ts.tzinfo is None:
        raise InvalidEvent(f"field 'ts' has no time zone: {raw!r}")
    return ts


def _quantity(doc: dict[str, Any]) -> int:
    quantity = doc.get("quantity")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity <= 0:
        raise InvalidEvent(f"field 'quantity' must be a positive integer, got {quantity!r}")
    if quantity > _MAX_QUANTITY:
        raise InvalidEvent(f"field 'quantity' out of range: {quantity}")
    return quantity


def _parse_carefully(raw: bytes | None) -> OrderEvent:
    doc = json_deserializer(raw)
    if not isinstance(doc, dict):
        raise InvalidEvent("event must be a JSON object")
    kind = doc.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise InvalidEvent(f"unknown event type {kind!r}")
    order_id = _text(doc, "order_id")
    ts = _timestamp(doc)
    if kind == "order_created":
        return OrderCreated(order_id, ts, _text(doc, "customer_id"))
    if kind == "item_added":
        sku = _text(doc, "sku")
        return ItemAdded(order_id, ts, sku, _quantity(doc), _money(doc, "unit_price"))
    if kind == "order_paid":
        return OrderPaid(order_id, ts, _money(doc, "amount"))
    if kind == "order_cancelled":
        return OrderCancelled(order_id, ts, _text(doc, "reason"))
    return OrderShipped(order_id, ts)
