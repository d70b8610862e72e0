"""The orders domain without a database: event parsing/validation and the pure state changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from eos_pipeline.events import Event
from eos_pipeline.handlers import InvalidEvent, InvalidJson, UndecodableEvent
from eos_pipeline.orders.handler import OrderState, already_applied, apply, status_deltas
from eos_pipeline.orders.schema import (
    EVENT_CLASSES,
    ItemAdded,
    Money,
    OrderCancelled,
    OrderCreated,
    OrderPaid,
    OrderShipped,
    parse_order_event,
)

TS = "2024-05-01T12:00:00+00:00"
TS_DT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

VALID: dict[str, dict[str, Any]] = {
    "order_created": {"type": "order_created", "order_id": "o1", "ts": TS, "customer_id": "c1"},
    "item_added": {
        "type": "item_added",
        "order_id": "o1",
        "ts": TS,
        "sku": "sku-1",
        "quantity": 3,
        "unit_price": "19.99",
    },
    "order_paid": {"type": "order_paid", "order_id": "o1", "ts": TS, "amount": "59.97"},
    "order_shipped": {"type": "order_shipped", "order_id": "o1", "ts": TS},
    "order_cancelled": {"type": "order_cancelled", "order_id": "o1", "ts": TS, "reason": "x"},
}


def raw(doc: Any) -> bytes:
    return orjson.dumps(doc)


def changed(kind: str, **fields: Any) -> bytes:
    doc = dict(VALID[kind])
    for name, value in fields.items():
        if value is _MISSING:
            doc.pop(name)
        else:
            doc[name] = value
    return raw(doc)


_MISSING = object()


# -- parse_order_event: valid events -----------------------------------------------------------
def test_order_created() -> None:
    e = parse_order_event(raw(VALID["order_created"]))
    assert e == OrderCreated("o1", TS_DT, customer_id="c1")


def test_item_added() -> None:
    e = parse_order_event(raw(VALID["item_added"]))
    assert e == ItemAdded("o1", TS_DT, sku="sku-1", quantity=3, unit_price=Money("19.99"))
    assert isinstance(e, ItemAdded)
    assert isinstance(e.unit_price, Decimal)


def test_order_paid() -> None:
    e = parse_order_event(raw(VALID["order_paid"]))
    assert e == OrderPaid("o1", TS_DT, amount=Money("59.97"))


def test_status_only_events() -> None:
    assert parse_order_event(raw(VALID["order_shipped"])) == OrderShipped("o1", TS_DT)
    assert parse_order_event(raw(VALID["order_cancelled"])) == OrderCancelled("o1", TS_DT, "x")


def test_every_valid_type_is_covered() -> None:
    from eos_pipeline.orders.schema import EVENT_TYPES

    assert set(VALID) == EVENT_TYPES
    assert {parse_order_event(raw(doc)).type for doc in VALID.values()} == EVENT_TYPES


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2024-05-01T12:00:00Z", TS_DT),
        (
            "2024-05-01T14:00:00+02:00",
            datetime(2024, 5, 1, 14, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("2024-05-01T12:00:00.123456+00:00", TS_DT.replace(microsecond=123456)),
    ],
)
def test_timestamps_with_a_zone(ts: str, expected: datetime) -> None:
    e = parse_order_event(changed("order_shipped", ts=ts))
    assert e.ts == expected
    assert e.ts.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize("amount", ["0", "0.5", "12.30", "999999999999.99", "1E+2"])
def test_accepted_amounts(amount: str) -> None:
    e = parse_order_event(changed("order_paid", amount=amount))
    assert isinstance(e, OrderPaid)
    assert e.amount == Decimal(amount)


def test_quantity_upper_bound_is_inclusive() -> None:
    e = parse_order_event(changed("item_added", quantity=1_000_000))
    assert isinstance(e, ItemAdded)
    assert e.quantity == 1_000_000


def test_extra_fields_are_ignored() -> None:
    e = parse_order_event(changed("order_shipped", carrier="ups"))
    assert e.type == "order_shipped"


# -- parse_order_event: invalid input ----------------------------------------------------------
def test_undecodable_bytes() -> None:
    with pytest.raises(UndecodableEvent) as info:
        parse_order_event(b'{"type": "\xff\xfe"}')
    assert type(info.value) is UndecodableEvent
    assert info.value.error_class == "DecodeError"


@pytest.mark.parametrize("value", [b"", b"{", b"not json", b'{"a": 1,}', b"{'a': 1}"])
def test_invalid_json(value: bytes) -> None:
    with pytest.raises(InvalidJson) as info:
        parse_order_event(value)
    assert info.value.error_class == "InvalidJson"
    assert isinstance(info.value, UndecodableEvent)


def test_tombstone() -> None:
    with pytest.raises(UndecodableEvent, match="tombstone") as info:
        parse_order_event(None)
    assert info.value.error_class == "DecodeError"


@pytest.mark.parametrize("doc", [[VALID["order_shipped"]], "order_shipped", 42, None, True])
def test_not_an_object(doc: Any) -> None:
    with pytest.raises(InvalidEvent, match="JSON object") as info:
        parse_order_event(raw(doc))
    assert info.value.error_class == "ValidationError"


@pytest.mark.parametrize("kind", ["order_refunded", "", "ORDER_PAID", None, 1, ["order_paid"], {}])
def test_unknown_type(kind: Any) -> None:
    with pytest.raises(InvalidEvent, match="unknown event type") as info:
        parse_order_event(changed("order_shipped", type=kind))
    assert info.value.error_class == "ValidationError"


def test_missing_type() -> None:
    with pytest.raises(InvalidEvent, match="unknown event type"):
        parse_order_event(changed("order_shipped", type=_MISSING))


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("order_created", "order_id"),
        ("order_created", "customer_id"),
        ("item_added", "sku"),
        ("order_cancelled", "reason"),
        ("order_paid", "order_id"),
    ],
)
@pytest.mark.parametrize("value", [_MISSING, "", None, 7, ["x"]])
def test_missing_or_empty_text_fields(kind: str, field: str, value: object) -> None:
    with pytest.raises(InvalidEvent, match=f"field '{field}' must be a non-empty string"):
        parse_order_event(changed(kind, **{field: value}))


@pytest.mark.parametrize("quantity", [0, -1, True, False, 1.0, 2.5, "3", None, _MISSING])
def test_bad_quantity(quantity: object) -> None:
    with pytest.raises(InvalidEvent, match="'quantity' must be a positive integer"):
        parse_order_event(changed("item_added", quantity=quantity))


def test_quantity_too_large() -> None:
    with pytest.raises(InvalidEvent, match="'quantity' out of range"):
        parse_order_event(changed("item_added", quantity=1_000_001))


@pytest.mark.parametrize("amount", [59.97, 60, None, _MISSING, ["1"]])
def test_amount_must_be_a_decimal_string(amount: object) -> None:
    with pytest.raises(InvalidEvent, match="'amount' must be a decimal string"):
        parse_order_event(changed("order_paid", amount=amount))


@pytest.mark.parametrize("amount", ["", "abc", "1,50", "1.2.3", "$5"])
def test_amount_not_a_decimal(amount: str) -> None:
    with pytest.raises(InvalidEvent, match="'amount' is not a decimal"):
        parse_order_event(changed("order_paid", amount=amount))


@pytest.mark.parametrize(
    "amount", ["-0.01", "-5", "NaN", "Infinity", "-Infinity", "sNaN", "1000000000000.00"]
)
def test_amount_out_of_range(amount: str) -> None:
    with pytest.raises(InvalidEvent, match="'amount' out of range"):
        parse_order_event(changed("order_paid", amount=amount))


@pytest.mark.parametrize("price", ["0.001", "19.999", "1.000"])
def test_more_than_two_decimals(price: str) -> None:
    with pytest.raises(InvalidEvent, match="'unit_price' has more than 2 decimals"):
        parse_order_event(changed("item_added", unit_price=price))


def test_negative_unit_price() -> None:
    with pytest.raises(InvalidEvent, match="'unit_price' out of range"):
        parse_order_event(changed("item_added", unit_price="-1.00"))


@pytest.mark.parametrize("ts", [1714564800, None, _MISSING])
def test_timestamp_not_a_string(ts: object) -> None:
    with pytest.raises(InvalidEvent, match="'ts' must be an ISO-8601 string"):
        parse_order_event(changed("order_shipped", ts=ts))


@pytest.mark.parametrize("ts", ["", "yesterday", "2024-13-01T00:00:00Z", "2024-05-01 25:00"])
def test_timestamp_not_iso(ts: str) -> None:
    with pytest.raises(InvalidEvent, match="'ts' is not ISO-8601"):
        parse_order_event(changed("order_shipped", ts=ts))


@pytest.mark.parametrize("ts", ["2024-05-01T12:00:00", "2024-05-01"])
def test_naive_timestamp(ts: str) -> None:
    with pytest.raises(InvalidEvent, match="no time zone"):
        parse_order_event(changed("order_shipped", ts=ts))


# -- handler: apply / already_applied / status_deltas ------------------------------------------
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def ev(
    kind: str,
    offset: int,
    *,
    partition: int = 0,
    topic: str = "orders",
    minutes: int = 0,
    **fields: Any,
) -> Event:
    if kind == "item_added":
        fields.setdefault("sku", "sku-1")
    if kind == "order_cancelled":
        fields.setdefault("reason", "x")
    value = EVENT_CLASSES[kind]("o1", T0 + timedelta(minutes=minutes), **fields)
    return Event(topic, partition, offset, b"o1", value, b"{}", 0)


def created(offset: int = 10, partition: int = 0) -> OrderState:
    state = apply(None, ev("order_created", offset, partition=partition, customer_id="c1"))
    assert state is not None
    return state


def test_order_created_starts_an_order() -> None:
    assert created() == OrderState(
        "o1", "c1", "created", 0, Decimal(0), None, T0, T0, "orders", 0, 10
    )


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("item_added", {"quantity": 1, "unit_price": Decimal("1.00")}),
        ("order_paid", {"amount": Decimal("1.00")}),
        ("order_shipped", {}),
        ("order_cancelled", {}),
    ],
)
def test_event_for_an_unknown_order_is_none(kind: str, fields: dict[str, Any]) -> None:
    assert apply(None, ev(kind, 5, **fields)) is None


def test_repeated_order_created_leaves_the_state_unchanged() -> None:
    state = created(offset=10)
    again = ev("order_created", 20, minutes=5, customer_id="someone-else")
    assert apply(state, again) is state


def test_items_add_up() -> None:
    s = created(offset=10)
    s1 = apply(s, ev("item_added", 11, minutes=1, quantity=2, unit_price=Decimal("1.25")))
    assert s1 is not None
    s2 = apply(s1, ev("item_added", 12, minutes=2, quantity=3, unit_price=Decimal("10.00")))
    assert s2 is not None
    assert (s2.item_count, s2.total_amount) == (5, Decimal("32.50"))
    assert (s2.status, s2.last_offset, s2.updated_at) == ("created", 12, T0 + timedelta(minutes=2))
    assert s2.created_at == T0


def test_paid_then_shipped() -> None:
    paid = apply(created(), ev("order_paid", 11, minutes=1, amount=Decimal("9.99")))
    assert paid is not None
    assert (paid.status, paid.paid_amount, paid.last_offset) == ("paid", Decimal("9.99"), 11)
    shipped = apply(paid, ev("order_shipped", 12, minutes=2))
    assert shipped is not None
    assert (shipped.status, shipped.paid_amount, shipped.last_offset) == (
        "shipped",
        Decimal("9.99"),
        12,
    )
    assert shipped.updated_at == T0 + timedelta(minutes=2)


def test_cancelled() -> None:
    cancelled = apply(created(), ev("order_cancelled", 11, minutes=3))
    assert cancelled is not None
    assert (cancelled.status, cancelled.paid_amount) == ("cancelled", None)
    assert cancelled.updated_at == T0 + timedelta(minutes=3)


@pytest.mark.parametrize("offset", [9, 10])
def test_event_at_or_below_last_offset_is_not_applied_twice(offset: int) -> None:
    state = created(offset=10)
    event = ev("item_added", offset, quantity=1, unit_price=Decimal("5.00"))
    assert already_applied(state, event)
    assert apply(state, event) is state


def test_applying_the_same_event_twice_counts_it_once() -> None:
    event = ev("item_added", 11, quantity=4, unit_price=Decimal("2.00"))
    once = apply(created(offset=10), event)
    assert once is not None
    assert apply(once, event) is once
    assert once.item_count == 4


def test_lower_offset_of_another_partition_or_topic_is_applied() -> None:
    state = created(offset=10, partition=0)
    other_partition = ev("order_paid", 3, partition=1, amount=Decimal("1.00"))
    other_topic = ev("order_paid", 3, topic="orders-v2", amount=Decimal("1.00"))
    for event in (other_partition, other_topic):
        assert not already_applied(state, event)
        new = apply(state, event)
        assert new is not None
        assert new.status == "paid"
        assert (new.src_topic, new.src_partition, new.last_offset) == (
            event.topic,
            event.partition,
            3,
        )


def test_already_applied_only_above_last_offset_is_new() -> None:
    assert not already_applied(created(offset=10), ev("order_shipped", 11))


def test_status_deltas() -> None:
    base = created()
    paid = apply(base, ev("order_paid", 11, amount=Decimal("1.00")))
    assert paid is not None
    new_order = OrderState("o2", "c2", "created", 0, Decimal(0), None, T0, T0, "orders", 0, 12)
    touched_same_status = apply(base, ev("item_added", 13, quantity=1, unit_price=Decimal("1.00")))
    assert touched_same_status is not None
    other = OrderState("o3", "c3", "created", 0, Decimal(0), None, T0, T0, "orders", 0, 1)
    moved = apply(base, ev("order_shipped", 14, partition=3))
    assert moved is not None

    assert status_deltas({"o1": base}, {"o1": paid}) == [("created", 0, -1), ("paid", 0, 1)]
    assert status_deltas({}, {"o2": new_order}) == [("created", 0, 1)]
    assert status_deltas({"o1": base}, {"o1": touched_same_status}) == []
    assert status_deltas({"o1": base, "o3": other}, {}) == []
    assert sorted(status_deltas({"o1": base}, {"o1": paid, "o2": new_order})) == sorted(
        [("created", 0, -1), ("paid", 0, 1), ("created", 0, 1)]
    )
    # Both sides go to the shard of the partition the batch holds (its latest event's).
    assert status_deltas({"o1": base}, {"o1": moved}) == [("created", 3, -1), ("shipped", 3, 1)]


# -- the fast parser agrees with the careful one -------------------------------------------------
def _outcome(parse: Any, value: bytes) -> object:
    try:
        return parse(value)
    except (UndecodableEvent, InvalidEvent) as exc:
        return (type(exc), str(exc))


AGREEMENT_CASES = [
    *(raw(doc) for doc in VALID.values()),
    changed("order_shipped", ts="2024-05-01t12:00:00z"),
    changed("order_shipped", ts="2024-05-01T12:00:00.5-03:30"),
    changed("order_shipped", ts="2024-05-01 12:00:00+00:00"),
    changed("order_shipped", ts="2024-05-01T12:00Z"),
    changed("order_shipped", ts="2024-05-01T12:00:00+0100"),
    changed("order_shipped", ts="2024-05-01T12:00:00"),
    changed("order_shipped", ts="2024-02-30T12:00:00Z"),
    changed("order_shipped", order_id="ö"),
    changed("item_added", quantity=True),
    changed("item_added", quantity=1.0),
    changed("item_added", quantity=1_000_001),
    changed("item_added", unit_price="1e2"),
    changed("item_added", unit_price=" 1.00"),
    changed("item_added", unit_price="0001.00"),
    changed("item_added", unit_price="1.005"),
    changed("item_added", unit_price=1.5),
    changed("order_paid", amount="999999999999.99"),
    changed("order_paid", amount="1000000000000"),
    changed("order_paid", amount="NaN"),
    changed("order_paid", amount="-0"),
    changed("order_created", customer_id=""),
    changed("order_created", type="order_shipped"),
    changed("order_cancelled", reason=None),
    b'{"type": "order_shipped", "order_id": "o1", "order_id": "o2", "ts": "2024-05-01T12:00:00Z"}',
    b'{"type": "order_shipped", "order_id": "o1", "ts": "2024-05-01T12:00:00Z"} x',
    b'{"type": "\xff\xfe"}',
    b"[]",
    b"",
]


@pytest.mark.parametrize("value", AGREEMENT_CASES)
def test_the_fast_parser_agrees_with_the_careful_one(value: bytes) -> None:
    from eos_pipeline.orders.schema import _parse_carefully

    assert _outcome(parse_order_event, value) == _outcome(_parse_carefully, value)


def test_the_fast_parser_takes_the_common_case(monkeypatch: pytest.MonkeyPatch) -> None:
    from eos_pipeline.orders import schema

    careful = schema._parse_carefully
    seen: list[bytes | None] = []

    def counting(value: bytes | None) -> schema.OrderEvent:
        seen.append(value)
        return careful(value)

    monkeypatch.setattr(schema, "_parse_carefully", counting)
    for doc in VALID.values():
        parse_order_event(raw(doc))
    with pytest.raises(InvalidEvent):
        parse_order_event(changed("item_added", quantity=0))
    assert seen == [changed("item_added", quantity=0)]


def test_beyond_microseconds_the_fast_parser_rounds() -> None:
    e = parse_order_event(changed("order_shipped", ts="2024-05-01T12:00:00.1234567Z"))
    assert e.ts == TS_DT.replace(microsecond=123457)
