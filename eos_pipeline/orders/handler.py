"""The default handler: orders events -> `order_events`, `orders`, `order_status_counts`.

Reprocessing is idempotent: `order_events` is keyed by source offset, and an event at or below
an order's `last_offset` (same source partition) is recognised as already applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from ..events import Event, tuple_maker
from ..views.builtin import ORDER_STATUS_COUNTS
from ..writer import Writer
from .schema import (
    STATUS_BY_TYPE,
    ItemAdded,
    OrderCreated,
    OrderEvent,
    OrderPaid,
    parse_order_event,
)

ORDER_COLUMNS = (
    "order_id",
    "customer_id",
    "status",
    "item_count",
    "total_amount",
    "paid_amount",
    "created_at",
    "updated_at",
    "src_topic",
    "src_partition",
    "last_offset",
)
EVENT_COLUMNS = (
    "src_topic",
    "src_partition",
    "src_offset",
    "order_id",
    "type",
    "event_ts",
    "payload",
)
UNKNOWN_ORDER = "UnknownOrder"


class OrderState(NamedTuple):
    """One row of `orders`, in ORDER_COLUMNS order (a named tuple: it is its own row)."""

    order_id: str
    customer_id: str
    status: str
    item_count: int
    total_amount: Decimal
    paid_amount: Decimal | None
    created_at: datetime
    updated_at: datetime
    src_topic: str
    src_partition: int
    last_offset: int

    def row(self) -> tuple[Any, ...]:
        return tuple(self)


_order_state = tuple_maker(OrderState)


def already_applied(state: OrderState, event: Event) -> bool:
    return (
        state.src_topic == event.topic
        and state.src_partition == event.partition
        and event.offset <= state.last_offset
    )


def apply(state: OrderState | None, event: Event) -> OrderState | None:
    """The order after `event`; None means the event refers to an order that does not exist.
    Raises nothing: the caller decides what an unknown order means."""
    e: OrderEvent = event.value
    if state is None:
        if not isinstance(e, OrderCreated):
            return None
        return _order_state(
            (
                e.order_id,
                e.customer_id,
                "created",
                0,
                Decimal(0),
                None,
                e.ts,
                e.ts,
                event.topic,
                event.partition,
                event.offset,
            )
        )
    if isinstance(e, OrderCreated) or already_applied(state, event):
        return state
    status, count, total, paid = (
        state.status,
        state.item_count,
        state.total_amount,
        state.paid_amount,
    )
    if isinstance(e, ItemAdded):
        count, total = count + e.quantity, total + e.quantity * e.unit_price
    elif isinstance(e, OrderPaid):
        status, paid = "paid", e.amount
    else:
        status = STATUS_BY_TYPE[e.type]
    return _order_state(
        (
            state.order_id,
            state.customer_id,
            status,
            count,
            total,
            paid,
            state.created_at,
            e.ts,
            event.topic,
            event.partition,
            event.offset,
        )
    )


def status_deltas(
    before: dict[str, OrderState], after: dict[str, OrderState]
) -> list[tuple[str, int, int]]:
    """(status, shard, +1/-1) for each order whose status the batch changed. The shard is the
    source partition of the order's latest event: one this batch holds, so no concurrent
    batch adds to the same `order_status_count_shards` rows."""
    deltas: list[tuple[str, int, int]] = []
    for order_id, new in after.items():
        old = before.get(order_id)
        if old is not None and old.status == new.status:
            continue
        if old is not None:
            deltas.append((old.status, new.src_partition, -1))
        deltas.append((new.status, new.src_partition, 1))
    return deltas


def _load(writer: Writer, order_ids: Sequence[str]) -> dict[str, OrderState]:
    cols = ", ".join(ORDER_COLUMNS)
    rows = writer.execute(
        f"SELECT {cols} FROM orders WHERE order_id = ANY(%s)", (list(order_ids),)
    ).fetchall()
    return {r[0]: _order_state(r) for r in rows}


class OrdersHandler:
    """Handler of the orders domain; its deserializer parses and validates each event."""

    deserialize = staticmethod(parse_order_event)

    def __call__(self, events: Sequence[Event], writer: Writer) -> None:
        _handle(events, writer)


def _handle(events: Sequence[Event], writer: Writer) -> None:
    before = _load(writer, list({e.value.order_id for e in events}))
    states = dict(before)
    changed: dict[str, OrderState] = {}
    recorded: list[tuple[Any, ...]] = []
    for event in events:
        e: OrderEvent = event.value
        current = states.get(e.order_id)
        if current is not None and already_applied(current, event):
            # Reprocessed (a replay without --rebuild): it is in order_events or dead_letters
            # already, and recording it now could file one offset in both.
            continue
        new = apply(current, event)
        if new is None:
            writer.dead_letter(event, UNKNOWN_ORDER, f"{e.type} for unknown order {e.order_id!r}")
            continue
        recorded.append(
            (event.topic, event.partition, event.offset, e.order_id, e.type, e.ts, event.raw)
        )
        if new is not current:
            states[e.order_id] = changed[e.order_id] = new
    writer.insert("order_events", EVENT_COLUMNS, recorded, on_conflict="ignore")
    writer.upsert("orders", ("order_id",), ORDER_COLUMNS, [s.row() for s in changed.values()])
    ORDER_STATUS_COUNTS.apply(
        writer.connection,
        [((status, shard), (n,)) for status, shard, n in status_deltas(before, changed)],
    )


handle_orders = OrdersHandler()
