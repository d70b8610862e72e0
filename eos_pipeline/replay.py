"""Replay: move a group's stored offsets, so the pipeline reprocesses (or skips) records.

Planning is pure (`parse_*`, `target_offset`, `build_plan`) and needs no broker. The reset is
one PostgreSQL transaction (`reset_offsets`): the group's offsets rows are locked in a fixed
order, set to the planned offsets, and their epoch bumped with an owner starting with
`REPLAY_OWNER_PREFIX`, so a running consumer is fenced at its next commit and re-claims the
partition from the new offset instead of giving it up.

Base tables are keyed by source offset, so reprocessing is idempotent: without `rebuild` a
replay leaves them as they are. With `rebuild` the derived rows of the replayed range are
deleted in the same transaction, the orders they touched are recomputed from their remaining
events, and the incremental summaries are rebuilt, so reprocessing applies those records anew
and nothing is counted twice.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException
from confluent_kafka import TopicPartition as KafkaTP
from psycopg import sql

from .errors import ConfigError, KafkaUnavailable, database_errors
from .events import Event
from .offsets import REPLAY_OWNER_PREFIX, lock_rows
from .orders.handler import ORDER_COLUMNS, OrderState, apply
from .orders.schema import parse_order_event
from .views.definitions import IncrementalView
from .views.incremental import rebuild_statements
from .views.watermark import record_refresh
from .writer import TableCatalog, Writer

Conn = psycopg.Connection[tuple[Any, ...]]

KAFKA_TIMEOUT_S = 5.0


def quiet_kafka(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Client settings for short look-ups: librdkafka's own connection-failure logs are left
    out (a failure is reported once, as an exception); the user's settings still win."""
    return {"log_level": "2", **(extra or {})}


class UnknownGroup(ConfigError):
    """No offsets are stored for the group: a replay would only invent rows for a typo."""


class UnknownPartition(ConfigError):
    """A partition the topic does not have."""


class OffsetOutOfRange(ConfigError):
    """A target offset outside what the broker still holds."""


# -- parsing --------------------------------------------------------------------------------
_DURATION_PART = re.compile(r"(\d+)([dhms])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: str) -> timedelta:
    """`1h30m`, `90s`, `2d`: units d, h, m, s, each at most once, largest first."""
    parts = _DURATION_PART.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ConfigError(f"not a duration: {text!r} (examples: 90s, 15m, 1h30m, 2d)")
    units = [u for _, u in parts]
    if len(set(units)) != len(units) or units != sorted(units, key="dhms".index):
        raise ConfigError(f"not a duration: {text!r} (each unit once, largest first)")
    duration = timedelta(**{_UNITS[u]: int(n) for n, u in parts})
    if duration <= timedelta(0):
        raise ConfigError(f"duration must be positive: {text!r}")
    return duration


def parse_timestamp(text: str) -> int:
    """ISO-8601 with a time zone (`2026-03-01T12:00:00Z`) -> milliseconds since the epoch;
    a time without a zone would silently depend on the machine's clock settings."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"not an ISO-8601 timestamp: {text!r}") from None
    if at.tzinfo is None:
        raise ConfigError(f"timestamp needs a time zone, e.g. {text}Z or {text}+02:00")
    return int(at.timestamp() * 1000)


def parse_partitions(text: str) -> tuple[int, ...]:
    """`0,2,5` -> (0, 2, 5), sorted and without repeats."""
    try:
        values = {int(p) for p in text.split(",") if p.strip()}
    except ValueError:
        raise ConfigError(f"--partitions takes comma-separated numbers, got {text!r}") from None
    if not values or min(values) < 0:
        raise ConfigError(f"--partitions takes partition numbers >= 0, got {text!r}")
    return tuple(sorted(values))


def select_partitions(topic: str, count: int, requested: Sequence[int] | None) -> tuple[int, ...]:
    """The requested partitions (default: all of them), each one the topic has."""
    if requested is None:
        return tuple(range(count))
    unknown = [p for p in requested if p >= count]
    if unknown:
        raise UnknownPartition(
            f"topic {topic} has partitions 0..{count - 1}; no partition "
            f"{', '.join(map(str, unknown))}"
        )
    return tuple(requested)


# -- the plan -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where to move: `earliest`, `latest`, an `offset` or a `timestamp` (ms since epoch)."""

    kind: str
    value: int = 0

    def describe(self) -> str:
        if self.kind == "offset":
            return f"offset {self.value}"
        if self.kind == "timestamp":
            return f"first record at or after {datetime.fromtimestamp(self.value / 1000, UTC)}"
        return self.kind


def duration_target(duration: timedelta, now: datetime | None = None) -> Target:
    at = (now or datetime.now(UTC)) - duration
    return Target("timestamp", int(at.timestamp() * 1000))


@dataclass(frozen=True)
class Watermarks:
    low: int
    high: int


def target_offset(target: Target, marks: Watermarks, by_time: int | None = None) -> int:
    """The offset a partition moves to. `by_time` is the broker's answer to offsets_for_times:
    None or negative means no record that late, so the partition moves to its end."""
    if target.kind == "earliest":
        return marks.low
    if target.kind == "latest":
        return marks.high
    if target.kind == "offset":
        return target.value
    if target.kind == "timestamp":
        return marks.high if by_time is None or by_time < 0 else by_time
    raise ValueError(f"unknown target kind {target.kind!r}")


@dataclass(frozen=True)
class PartitionPlan:
    topic: str
    partition: int
    stored: int | None  # None: no row, or no commit yet
    new: int
    marks: Watermarks

    @property
    def reprocess(self) -> int:
        """Offsets between the new and the stored position that will be read again."""
        return 0 if self.stored is None else max(self.stored - self.new, 0)

    @property
    def skip(self) -> int:
        """Offsets the move jumps over without processing them."""
        start = self.marks.low if self.stored is None else self.stored
        return max(self.new - start, 0)


def check_range(topic: str, partition: int, offset: int, marks: Watermarks) -> None:
    if not marks.low <= offset <= marks.high:
        raise OffsetOutOfRange(
            f"offset {offset} is outside {topic}[{partition}]'s range: the broker holds "
            f"offsets {marks.low}..{marks.high} (low watermark..high watermark)"
        )


def build_plan(
    topic: str,
    partitions: Sequence[int],
    stored: Mapping[int, int | None],
    marks: Mapping[int, Watermarks],
    target: Target,
    by_time: Mapping[int, int | None] | None = None,
) -> tuple[PartitionPlan, ...]:
    """One plan per partition; every new offset within the broker's watermarks."""
    plans = []
    for p in partitions:
        new = target_offset(target, marks[p], (by_time or {}).get(p))
        check_range(topic, p, new, marks[p])
        plans.append(PartitionPlan(topic, p, stored.get(p), new, marks[p]))
    return tuple(plans)


PLAN_COLUMNS = ("partition", "stored", "new", "reprocess", "skip")


def plan_rows(plans: Iterable[PartitionPlan]) -> list[tuple[Any, ...]]:
    return [
        (
            f"{p.topic}[{p.partition}]",
            "-" if p.stored is None else p.stored,
            p.new,
            p.reprocess,
            p.skip,
        )
        for p in plans
    ]


def replay_owner() -> str:
    """An owner no consumer uses, telling fenced consumers to re-claim (see fence_outcome)."""
    return f"{REPLAY_OWNER_PREFIX}{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


# -- recomputing orders ---------------------------------------------------------------------
def recompute_orders(
    order_ids: Iterable[str], events: Iterable[tuple[str, str, int, int, bytes]]
) -> dict[str, OrderState | None]:
    """Fold each order's remaining events (order_id, topic, partition, offset, payload) in
    the given order with the handler's own `apply`; None: nothing of the order remains."""
    states: dict[str, OrderState | None] = dict.fromkeys(order_ids)
    for order_id, topic, partition, offset, payload in events:
        event = Event(topic, partition, offset, None, parse_order_event(payload), payload, 0)
        states[order_id] = apply(states.get(order_id), event) or states.get(order_id)
    return states


# -- the broker -----------------------------------------------------------------------------
@contextmanager
def offset_lookup(bootstrap: str, extra: Mapping[str, str] | None = None) -> Iterator[OffsetLookup]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"eos-lookup-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            **quiet_kafka(extra),
        }
    )
    try:
        yield OffsetLookup(consumer)
    finally:
        consumer.close()


class OffsetLookup:
    """Watermarks and offsets by time, asked of the broker (read_committed: the high watermark
    is the last stable offset)."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    def watermarks(self, topic: str, partitions: Iterable[int]) -> dict[int, Watermarks]:
        out: dict[int, Watermarks] = {}
        try:
            for p in partitions:
                low, high = self._consumer.get_watermark_offsets(
                    KafkaTP(topic, p), timeout=KAFKA_TIMEOUT_S, cached=False
                )
                out[p] = Watermarks(int(low), int(high))
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"cannot read watermarks of {topic}: {exc.args[0].str()}"
            ) from None
        return out

    def delivered_offsets(
        self, topic: str, ranges: Mapping[int, tuple[int, int]], timeout_s: float
    ) -> dict[int, list[int]]:
        """Offsets a read_committed consumer receives in each partition's [start, end): commit
        markers and aborted records take offsets but are never delivered. Partitions whose
        position has not reached `end` when the time is up are left out."""
        if not ranges:
            return {}
        got: dict[int, list[int]] = {p: [] for p in ranges}
        pending = set(ranges)
        deadline = time.monotonic() + timeout_s
        try:
            self._consumer.assign([KafkaTP(topic, p, start) for p, (start, _) in ranges.items()])
            while pending and time.monotonic() < deadline:
                for m in self._consumer.consume(500, timeout=0.1):
                    p, offset = m.partition() or 0, m.offset()
                    end = ranges[p][1] if p in pending else 0
                    if m.error() is None and offset is not None and offset < end:
                        got[p].append(offset)
                positions = self._consumer.position([KafkaTP(topic, p) for p in pending])
                pending -= {t.partition for t in positions if t.offset >= ranges[t.partition][1]}
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot read {topic}: {exc.args[0].str()}") from None
        finally:
            self._consumer.unassign()
        return {p: offsets for p, offsets in got.items() if p not in pending}

    def offsets_for_times(
        self, topic: str, partitions: Iterable[int], timestamp_ms: int
    ) -> dict[int, int | None]:
        query = [KafkaTP(topic, p, timestamp_ms) for p in partitions]
        try:
            found = self._consumer.offsets_for_times(query, timeout=KAFKA_TIMEOUT_S)
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"cannot look up offsets of {topic}: {exc.args[0].str()}"
            ) from None
        return {int(tp.partition): int(tp.offset) for tp in found}


# -- the database ---------------------------------------------------------------------------
def stored_offsets(conn: Conn, group: str, topic: str) -> dict[int, int | None]:
    """The group's next offsets for the topic; UnknownGroup when the group has no row at all."""
    with database_errors("reading eos_offsets"):
        rows = conn.execute(
            "SELECT topic, partition, next_offset FROM eos_offsets WHERE consumer_group = %s",
            (group,),
        ).fetchall()
        if not rows:
            known = [
                str(g)
                for (g,) in conn.execute(
                    "SELECT DISTINCT consumer_group FROM eos_offsets ORDER BY 1 LIMIT 20"
                ).fetchall()
            ]
            raise UnknownGroup(
                f"no stored offsets for group {group!r} (known groups: "
                f"{', '.join(known) or 'none'})"
            )
    return {int(p): None if n is None else int(n) for t, p, n in rows if t == topic}


@dataclass(frozen=True)
class ResetResult:
    previous: Mapping[int, int | None]  # as locked in the reset transaction
    events_deleted: int = 0
    dead_letters_deleted: int = 0
    orders_recomputed: int = 0
    orders_deleted: int = 0
    views_rebuilt: tuple[str, ...] = ()
    rebuilt: bool = False


_RESET_SQL = """
INSERT INTO eos_offsets AS o (consumer_group, topic, partition, next_offset, epoch, owner)
SELECT %(group)s, %(topic)s, p, n, 1, %(owner)s
FROM unnest(%(partitions)s::int[], %(offsets)s::bigint[]) AS u(p, n)
ORDER BY p
ON CONFLICT (consumer_group, topic, partition) DO UPDATE
   SET next_offset = EXCLUDED.next_offset, epoch = o.epoch + 1, owner = EXCLUDED.owner,
       updated_at = now()
"""

# The replayed range of one topic: (partition, new offset) pairs.
_RANGE = "unnest(%(partitions)s::int[], %(offsets)s::bigint[]) AS r(p, n)"
_IN_RANGE = "src_topic = %(topic)s AND src_partition = r.p AND src_offset >= r.n"


def reset_offsets(
    conn: Conn,
    group: str,
    plans: Sequence[PartitionPlan],
    owner: str,
    rebuild: Sequence[IncrementalView] | None = None,
) -> ResetResult:
    """Move the partitions to their planned offsets in ONE transaction; with `rebuild` (the
    incremental views to recompute) also drop and recompute what the replayed range derived.

    With rebuild, the pipeline's tables are locked first, in the order a batch writes them,
    so a batch in flight finishes before and the next one waits: no deadlock, no stale state.
    """
    ordered = sorted(plans, key=lambda p: p.partition)
    if len({p.topic for p in ordered}) > 1:
        raise ValueError("one topic per replay")
    topic = ordered[0].topic
    params = {
        "group": group,
        "topic": topic,
        "owner": owner,
        "partitions": [p.partition for p in ordered],
        "offsets": [p.new for p in ordered],
    }
    with database_errors("replay"), conn.transaction(), conn.cursor() as cur:
        if rebuild is not None:
            tables = ["order_events", "orders", *(v.table for v in rebuild), "dead_letters"]
            cur.execute(
                sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(
                    sql.SQL(", ").join(map(sql.Identifier, dict.fromkeys(tables)))
                )
            )
        rows = lock_rows(cur, group, [(topic, p.partition) for p in ordered])
        previous = {
            p.partition: None
            if (row := rows.get((topic, p.partition))) is None
            else row.next_offset
            for p in ordered
        }
        cur.execute(_RESET_SQL, params)
        # Offsets recorded as done above the old position (`run --order key`) mean nothing
        # at the new one: the replayed range is to be processed again.
        cur.execute(
            "DELETE FROM eos_done_offsets WHERE consumer_group = %(group)s "
            "AND topic = %(topic)s AND partition = ANY(%(partitions)s)",
            params,
        )
        if rebuild is None:
            return ResetResult(previous)
        return _rebuild(conn, cur, params, previous, rebuild)


def _rebuild(
    conn: Conn,
    cur: psycopg.Cursor[tuple[Any, ...]],
    params: dict[str, Any],
    previous: Mapping[int, int | None],
    views: Sequence[IncrementalView],
) -> ResetResult:
    """Inside the reset transaction: delete the replayed range's events and dead letters,
    recompute the orders it touched from what remains, rebuild the incremental views."""
    cur.execute(f"SELECT DISTINCT order_id FROM order_events, {_RANGE} WHERE {_IN_RANGE}", params)
    touched = [str(o) for (o,) in cur.fetchall()]
    cur.execute(f"DELETE FROM order_events USING {_RANGE} WHERE {_IN_RANGE}", params)
    events_deleted = cur.rowcount
    cur.execute(f"DELETE FROM dead_letters USING {_RANGE} WHERE {_IN_RANGE}", params)
    letters_deleted = cur.rowcount
    cur.execute(
        "SELECT order_id, src_topic, src_partition, src_offset, payload::text FROM order_events"
        " WHERE order_id = ANY(%s) ORDER BY order_id, src_topic, src_partition, src_offset",
        (touched,),
    )
    remaining = [(str(o), str(t), int(p), int(n), str(v).encode()) for o, t, p, n, v in cur]
    states = recompute_orders(touched, remaining)
    cur.execute("DELETE FROM orders WHERE order_id = ANY(%s)", (touched,))
    kept = [s.row() for s in states.values() if s is not None]
    Writer(conn, TableCatalog()).insert("orders", ORDER_COLUMNS, kept)
    for view in views:
        record_refresh(
            conn, view.name, view.kind, partial(_execute, conn, rebuild_statements(view))
        )
    return ResetResult(
        previous,
        events_deleted,
        letters_deleted,
        orders_recomputed=len(kept),
        orders_deleted=len(touched) - len(kept),
        views_rebuilt=tuple(v.name for v in views),
        rebuilt=True,
    )


def _execute(conn: Conn, statements: Sequence[sql.Composed]) -> None:
    for statement in statements:
        conn.execute(statement)
