"""Audit: does PostgreSQL hold exactly what the topic says, once? Used by the tests, the
reliability harness and operators (`python -m eos_pipeline audit`).

It reads the topic itself (read_committed, from the beginning) and recomputes the orders state
with its own fold, independent of the handler, then compares it with what the pipeline wrote.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from .events import TopicPartition as TP
from .handlers import InvalidEvent, UndecodableEvent
from .orders.schema import (
    STATUS_BY_TYPE,
    ItemAdded,
    OrderCreated,
    OrderEvent,
    OrderPaid,
    parse_order_event,
)
from .writer import Conn


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None


def read_topic(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[Record]:
    """Every committed record of `topic`, partition by partition, in offset order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"eos-audit-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = sorted(meta.partitions)
        # With read_committed the high watermark is the last stable offset.
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions if ends[p] > 0])
        pending = {p for p in partitions if ends[p] > 0}
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=0.5):
                if m.error() is not None:
                    continue
                p, off = int(m.partition() or 0), int(m.offset() or 0)
                value = m.value()
                out.append(
                    Record(topic, p, off, value.encode() if isinstance(value, str) else value)
                )
                if off + 1 >= ends[p]:
                    pending.discard(p)
            for p in list(pending):
                pos = consumer.position([TopicPartition(topic, p)])[0].offset
                if pos >= ends[p]:
                    pending.discard(p)
        if pending:
            raise TimeoutError(f"could not read {topic} partitions {sorted(pending)} to the end")
        out.sort(key=lambda r: (r.partition, r.offset))
        return out
    finally:
        consumer.close()


@dataclass
class ExpectedOrder:
    customer_id: str
    status: str
    item_count: int = 0
    total_amount: Decimal = Decimal(0)
    paid_amount: Decimal | None = None
    created_at: Any = None
    updated_at: Any = None
    last_offset: int = -1


@dataclass
class Expected:
    orders: dict[str, ExpectedOrder] = field(default_factory=dict)
    valid: set[tuple[str, int, int]] = field(default_factory=set)
    dead: set[tuple[str, int, int]] = field(default_factory=set)
    payments: list[tuple[datetime, Decimal]] = field(default_factory=list)


def expected_state(records: Sequence[Record]) -> Expected:
    """Fold the orders events on their own, record by record, in offset order."""
    exp = Expected()
    for r in records:
        where = (r.topic, r.partition, r.offset)
        try:
            e: OrderEvent = parse_order_event(r.value)
        except (UndecodableEvent, InvalidEvent):
            exp.dead.add(where)
            continue
        order = exp.orders.get(e.order_id)
        if isinstance(e, OrderCreated):
            exp.valid.add(where)
            if order is None:
                exp.orders[e.order_id] = ExpectedOrder(
                    e.customer_id,
                    "created",
                    created_at=e.ts,
                    updated_at=e.ts,
                    last_offset=r.offset,
                )
            continue
        if order is None:
            exp.dead.add(where)
            continue
        exp.valid.add(where)
        order.updated_at, order.last_offset = e.ts, r.offset
        if isinstance(e, ItemAdded):
            order.item_count += e.quantity
            order.total_amount += e.quantity * e.unit_price
        else:
            order.status = STATUS_BY_TYPE[e.type]
            if isinstance(e, OrderPaid):
                order.paid_amount = e.amount
                exp.payments.append((e.ts, e.amount))
    return exp


@dataclass
class AuditReport:
    records: int
    processed: int
    dead_letters: int
    lost: list[tuple[str, int, int]]
    duplicated: list[tuple[str, int, int]]
    unexpected: list[tuple[str, int, int]]
    order_mismatches: list[str]
    status_count_mismatches: list[str]
    offsets_behind: list[str]
    view_mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.unexpected
            or self.order_mismatches
            or self.status_count_mismatches
            or self.offsets_behind
            or self.view_mismatches
        )

    def summary(self) -> str:
        return orjson.dumps(
            {
                "records": self.records,
                "processed": self.processed,
                "dead_letters": self.dead_letters,
                "lost": len(self.lost),
                "duplicated": len(self.duplicated),
                "unexpected": len(self.unexpected),
                "order_mismatches": self.order_mismatches[:5],
                "status_count_mismatches": self.status_count_mismatches,
                "offsets_behind": self.offsets_behind,
                "view_mismatches": self.view_mismatches[:5],
            }
        ).decode()


def audit(conn: Conn, records: Sequence[Record], group: str) -> AuditReport:
    """Compare the database with the records (read by `read_topic`) of the group's topics."""
    exp = expected_state(records)
    topics = sorted({r.topic for r in records})
    events = _sources(conn, "order_events", topics)
    dead = _sources(conn, "dead_letters", topics)
    seen = Counter(events) + Counter(dead)
    kafka = {(r.topic, r.partition, r.offset) for r in records}
    lost = sorted(kafka - set(seen))
    duplicated = sorted(k for k, n in seen.items() if n > 1)
    unexpected = sorted(set(seen) - kafka)
    misfiled = sorted((set(events) - exp.valid) | (set(dead) - exp.dead))
    mismatches = [f"misfiled {m}" for m in misfiled[:20]]
    mismatches += _compare_orders(conn, exp.orders)
    status = _compare_status_counts(conn, exp.orders)
    behind = _offsets_behind(conn, group, records)
    return AuditReport(
        len(records),
        len(events),
        len(dead),
        lost,
        duplicated,
        unexpected,
        mismatches,
        status,
        behind,
        _compare_views(conn, exp),
    )


def _sources(conn: Conn, table: str, topics: list[str]) -> list[tuple[str, int, int]]:
    rows = conn.execute(
        f"SELECT src_topic, src_partition, src_offset FROM {table} WHERE src_topic = ANY(%s)",
        (topics,),
    ).fetchall()
    return [(str(t), int(p), int(o)) for t, p, o in rows]


def _compare_orders(conn: Conn, expected: dict[str, ExpectedOrder]) -> list[str]:
    rows = conn.execute(
        "SELECT order_id, customer_id, status, item_count, total_amount, paid_amount, "
        "created_at, updated_at, last_offset FROM orders"
    ).fetchall()
    actual = {r[0]: r[1:] for r in rows}
    out = [f"missing order {o}" for o in sorted(set(expected) - set(actual))][:10]
    out += [f"extra order {o}" for o in sorted(set(actual) - set(expected))][:10]
    for oid, e in expected.items():
        a = actual.get(oid)
        want = (
            e.customer_id,
            e.status,
            e.item_count,
            e.total_amount,
            e.paid_amount,
            e.created_at,
            e.updated_at,
            e.last_offset,
        )
        if a is not None and tuple(a) != want:
            out.append(f"order {oid}: stored {tuple(a)} != expected {want}")
            if len(out) > 20:
                break
    return out


def _compare_status_counts(conn: Conn, expected: dict[str, ExpectedOrder]) -> list[str]:
    want = Counter(o.status for o in expected.values())
    got = {
        str(s): int(n)
        for s, n in conn.execute("SELECT status, orders FROM order_status_counts").fetchall()
        if n != 0
    }
    return [] if got == dict(want) else [f"order_status_counts {got} != {dict(want)}"]


def _offsets_behind(conn: Conn, group: str, records: Sequence[Record]) -> list[str]:
    last: dict[TP, int] = {}
    for r in records:
        last[(r.topic, r.partition)] = max(last.get((r.topic, r.partition), -1), r.offset)
    stored = {
        (str(t), int(p)): n
        for t, p, n in conn.execute(
            "SELECT topic, partition, next_offset FROM eos_offsets WHERE consumer_group = %s",
            (group,),
        ).fetchall()
    }
    return [
        f"{t}[{p}] stored {stored.get((t, p))} < {off + 1}"
        for (t, p), off in sorted(last.items())
        if (stored.get((t, p)) or 0) < off + 1
    ]


def expected_customer_totals(orders: dict[str, ExpectedOrder]) -> dict[str, tuple[Any, ...]]:
    """customer_id -> (orders, paid_orders, revenue, last_order_at), folded independently."""
    out: dict[str, list[Any]] = {}
    for o in orders.values():
        row = out.setdefault(o.customer_id, [0, 0, Decimal(0), o.created_at])
        row[0] += 1
        row[1] += o.status in ("paid", "shipped")
        if o.status != "cancelled" and o.paid_amount is not None:
            row[2] += o.paid_amount
        row[3] = max(row[3], o.created_at)
    return {k: tuple(v) for k, v in out.items()}


def expected_revenue_by_hour(
    payments: Sequence[tuple[datetime, Decimal]],
) -> dict[datetime, tuple[int, Decimal]]:
    out: dict[datetime, tuple[int, Decimal]] = {}
    for ts, amount in payments:
        hour = ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        n, total = out.get(hour, (0, Decimal(0)))
        out[hour] = (n + 1, total + amount)
    return out


def _compare_views(conn: Conn, exp: Expected) -> list[str]:
    """Refresh the materialized views now and compare them with the independent fold."""
    out: list[str] = []
    conn.execute("REFRESH MATERIALIZED VIEW customer_order_totals")
    conn.execute("REFRESH MATERIALIZED VIEW revenue_by_hour")
    got_totals = {
        r[0]: tuple(r[1:])
        for r in conn.execute(
            "SELECT customer_id, orders, paid_orders, revenue, last_order_at "
            "FROM customer_order_totals"
        ).fetchall()
    }
    want_totals = expected_customer_totals(exp.orders)
    if got_totals != want_totals:
        diff = sorted(set(got_totals.items()) ^ set(want_totals.items()), key=repr)[:3]
        out.append(f"customer_order_totals differs: {diff}")
    got_hours = {
        r[0]: (r[1], r[2])
        for r in conn.execute("SELECT hour, payments, revenue FROM revenue_by_hour").fetchall()
    }
    want_hours = expected_revenue_by_hour(exp.payments)
    if got_hours != want_hours:
        diff = sorted(set(got_hours.items()) ^ set(want_hours.items()), key=repr)[:3]
        out.append(f"revenue_by_hour differs: {diff}")
    return out
