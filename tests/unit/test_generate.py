"""The orders event generator: deterministic, ordered per order, and poisoned on request."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from eos_pipeline.orders.generate import generate_orders

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
# type -> the types that may come before it, for one order
ALLOWED_AFTER: dict[str, set[str | None]] = {
    "order_created": {None},
    "item_added": {"order_created", "item_added"},
    "order_paid": {"item_added"},
    "order_shipped": {"order_paid"},
    "order_cancelled": {"item_added", "order_paid"},
}
FIELDS = {
    "order_created": {"type", "order_id", "customer_id", "ts"},
    "item_added": {"type", "order_id", "sku", "quantity", "unit_price", "ts"},
    "order_paid": {"type", "order_id", "amount", "ts"},
    "order_shipped": {"type", "order_id", "ts"},
    "order_cancelled": {"type", "order_id", "reason", "ts"},
}


def valid_event(key: bytes, value: bytes) -> dict[str, object] | None:
    """The event if it follows the schema, else None."""
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    kind = event.get("type") if isinstance(event, dict) else None
    if kind not in FIELDS or set(event) != FIELDS[kind] or key != event["order_id"].encode():
        return None
    if not TS.match(event["ts"]):
        return None
    if kind == "item_added" and not (isinstance(event["quantity"], int) and event["quantity"] > 0):
        return None
    for money in ("unit_price", "amount"):
        if money in event and not re.fullmatch(r"\d+\.\d\d", event[money]):
            return None
    valid: dict[str, object] = event
    return valid


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    assert list(generate_orders(500, seed=1)) == list(generate_orders(500, seed=1))
    assert list(generate_orders(500, seed=1)) != list(generate_orders(500, seed=2))
    assert len(list(generate_orders(1234, seed=3, poison_rate=0.1))) == 1234


def assert_stories_in_order(events: list[dict[str, object]]) -> None:
    """Each order's events follow the allowed sequence; timestamps rise strictly, in UTC."""
    last: dict[str, str | None] = {}
    for event in events:
        oid, kind = str(event["order_id"]), str(event["type"])
        assert last.get(oid) in ALLOWED_AFTER[kind], (oid, last.get(oid), kind)
        last[oid] = kind
    times = [datetime.fromisoformat(str(e["ts"])) for e in events]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert {t.utcoffset() for t in times} == {timedelta(0)}


def test_valid_stream_keeps_every_orders_story_in_order() -> None:
    events = [valid_event(k, v) for k, v in generate_orders(5000, seed=4, open_orders=30)]
    assert None not in events
    assert_stories_in_order([e for e in events if e is not None])


def test_mix_is_realistic_and_orders_interleave() -> None:
    records = list(generate_orders(5000, seed=5))
    kinds = Counter(orjson.loads(v)["type"] for _, v in records)
    assert kinds["item_added"] > kinds["order_created"] > kinds["order_paid"]
    assert kinds["order_paid"] > kinds["order_shipped"] > kinds["order_cancelled"] > 0
    first_ten_keys = {k for k, _ in records[:10]}
    assert len(first_ten_keys) > 5, "many orders are open at once"


def test_paid_amount_is_the_sum_of_the_items() -> None:
    totals: dict[str, Decimal] = {}
    for _, value in generate_orders(3000, seed=6):
        event = orjson.loads(value)
        oid = event["order_id"]
        if event["type"] == "item_added":
            totals[oid] = totals.get(oid, Decimal(0)) + event["quantity"] * Decimal(
                event["unit_price"]
            )
        elif event["type"] == "order_paid":
            assert Decimal(event["amount"]) == totals[oid]


def test_poison_covers_every_kind_and_leaves_valid_events_intact() -> None:
    records = list(generate_orders(4000, seed=7, poison_rate=0.25))
    valid = [valid_event(k, v) for k, v in records]
    invalid = [v for (_, v), ok in zip(records, valid, strict=True) if ok is None]
    assert 0.2 < len(invalid) / len(records) < 0.3
    assert all(b"\n" not in v for _, v in records), "fits a JSON-lines file"
    undecodable = [v for v in invalid if not _utf8(v)]
    not_json = [v for v in invalid if _utf8(v) and not _json(v)]
    docs = [orjson.loads(v) for v in invalid if _json(v)]
    assert undecodable and not_json
    assert any(d["type"] == "order_paid" and "amount" not in d for d in docs)
    assert any(d["type"] not in FIELDS for d in docs)
    assert any(d.get("quantity") == 0 for d in docs)
    assert any(d.get("unit_price") == "12.3.4" for d in docs)
    assert any(d.get("ts") == "yesterday" for d in docs)
    well_formed = [e for e in valid if e is not None]
    created = {e["order_id"] for e in well_formed if e["type"] == "order_created"}
    orphans = [e for e in well_formed if e["order_id"] not in created]
    assert orphans, "well-formed events for an order that never existed"
    assert_stories_in_order([e for e in well_formed if e["order_id"] in created])


def _utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def _json(value: bytes) -> bool:
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True


@pytest.mark.parametrize("kwargs", [{"open_orders": 0}, {"poison_rate": 1.5}])
def test_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        list(generate_orders(1, **kwargs))  # type: ignore[arg-type]
