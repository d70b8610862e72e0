"""Deterministic sample events of the orders domain: the demo and benchmark source.

Every order begins with `order_created`, gets one or more `item_added`, then maybe
`order_paid`, then maybe `order_shipped` or `order_cancelled`. Many orders are open at once and
their events interleave, but each order's own events keep that order, and timestamps increase
across the whole stream. A share of deliberately invalid records (`poison_rate`) exercises the
consumer's dead-letter path; they are extra records, so the valid events stay a complete,
ordered story. The same arguments always give the same bytes.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

DEFAULT_START = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
DEFAULT_OPEN_ORDERS = 50
CENT = Decimal("0.01")
CANCEL_REASONS = ("customer request", "payment failed", "out of stock", "address invalid")

Event = dict[str, Any]
Record = tuple[bytes, bytes]


class Poison(enum.Enum):
    """The kinds of invalid record a consumer must route to its dead letters."""

    UNDECODABLE = "undecodable bytes"
    INVALID_JSON = "invalid JSON"
    MISSING_FIELD = "missing field"
    UNKNOWN_TYPE = "unknown type"
    BAD_QUANTITY = "quantity <= 0"
    BAD_DECIMAL = "bad decimal"
    BAD_TIMESTAMP = "bad timestamp"
    UNKNOWN_ORDER = "event for an unknown order"


def order_id(seed: int, n: int) -> str:
    return f"ord-{seed}-{n:06d}"


def money(cents: int) -> str:
    return str((Decimal(cents) * CENT).quantize(CENT))


def plan_order(rng: random.Random, oid: str) -> list[Event]:
    """One order's events in their required order, without timestamps (those are given when
    the events interleave). About 80% get paid; of those most ship, some are cancelled; of
    the unpaid, half are cancelled and half stay open."""
    events: list[Event] = [
        {
            "type": "order_created",
            "order_id": oid,
            "customer_id": f"cust-{rng.randint(1, 2000):04d}",
        }
    ]
    total = 0
    for _ in range(rng.choices((1, 2, 3, 4, 5), weights=(30, 30, 20, 12, 8))[0]):
        quantity = rng.choices((1, 2, 3, 5, 10), weights=(50, 25, 12, 8, 5))[0]
        cents = rng.randint(99, 19_999)
        total += quantity * cents
        events.append(
            {
                "type": "item_added",
                "order_id": oid,
                "sku": f"SKU-{rng.randint(1, 500):04d}",
                "quantity": quantity,
                "unit_price": money(cents),
            }
        )
    roll = rng.random()
    if roll < 0.8:
        events.append({"type": "order_paid", "order_id": oid, "amount": money(total)})
        roll = rng.random()
        if roll < 0.75:
            events.append({"type": "order_shipped", "order_id": oid})
        elif roll < 0.85:
            events.append(_cancelled(rng, oid))
    elif roll < 0.9:
        events.append(_cancelled(rng, oid))
    return events


def _cancelled(rng: random.Random, oid: str) -> Event:
    return {"type": "order_cancelled", "order_id": oid, "reason": rng.choice(CANCEL_REASONS)}


def timestamp(at: datetime) -> str:
    """ISO-8601 in UTC with microseconds always present, e.g. 2026-12-04T10:00:00.123456+00:00."""
    return at.isoformat(timespec="microseconds")


def encode(event: Event) -> Record:
    return str(event["order_id"]).encode(), orjson.dumps(event)


def poison_value(kind: Poison, oid: str, ts: str) -> bytes:
    """An invalid record of the given kind about order `oid`; never contains a newline, so it
    survives a JSON-lines file."""
    item: Event = {"type": "item_added", "order_id": oid, "sku": "SKU-0001"}
    match kind:
        case Poison.UNDECODABLE:
            return b"\xff\xfe\x00\x9c" + oid.encode() + b"\xc3\x28"
        case Poison.INVALID_JSON:
            return b'{"type": "order_paid", "order_id": "' + oid.encode() + b'", "amount": '
        case Poison.MISSING_FIELD:
            return orjson.dumps({"type": "order_paid", "order_id": oid, "ts": ts})
        case Poison.UNKNOWN_TYPE:
            return orjson.dumps({"type": "order_teleported", "order_id": oid, "ts": ts})
        case Poison.BAD_QUANTITY:
            return orjson.dumps({**item, "quantity": 0, "unit_price": "9.99", "ts": ts})
        case Poison.BAD_DECIMAL:
            return orjson.dumps({**item, "quantity": 1, "unit_price": "12.3.4", "ts": ts})
        case Poison.BAD_TIMESTAMP:
            return orjson.dumps({**item, "quantity": 1, "unit_price": "9.99", "ts": "yesterday"})
        case Poison.UNKNOWN_ORDER:
            return orjson.dumps({**item, "quantity": 1, "unit_price": "9.99", "ts": ts})


def generate_orders(
    count: int,
    *,
    seed: int = 0,
    open_orders: int = DEFAULT_OPEN_ORDERS,
    poison_rate: float = 0.0,
    start: datetime = DEFAULT_START,
) -> Iterator[Record]:
    """`count` (key, value) records: key = order_id, value = the JSON event. `open_orders` is
    how many orders are in progress at once (how finely they interleave); a finished order
    is replaced by a new one."""
    if open_orders < 1:
        raise ValueError("open_orders must be at least 1")
    if not 0.0 <= poison_rate <= 1.0:
        raise ValueError("poison_rate must be between 0 and 1")
    rng = random.Random(seed)
    at = start
    open_: list[deque[Event]] = []
    started = 0
    kinds = list(Poison)
    for _ in range(count):
        while len(open_) < open_orders:
            open_.append(deque(plan_order(rng, order_id(seed, started))))
            started += 1
        at += timedelta(microseconds=rng.randint(1_000, 250_000))
        slot = rng.randrange(len(open_))
        if poison_rate and rng.random() < poison_rate:
            kind = rng.choice(kinds)
            oid = open_[slot][0]["order_id"]
            if kind is Poison.UNKNOWN_ORDER:
                oid = f"ord-{seed}-unknown-{rng.randrange(10**6):06d}"
            yield oid.encode(), poison_value(kind, oid, timestamp(at))
            continue
        event = {**open_[slot].popleft(), "ts": timestamp(at)}
        if not open_[slot]:
            open_[slot] = open_[-1]
            open_.pop()
        yield encode(event)
