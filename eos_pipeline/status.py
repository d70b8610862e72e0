"""What `status` reports: per partition how far the stored offsets are behind the broker,
who owns each partition, the dead letters by error class and how fresh each view is.

Lag counts records still to process. Offsets overcount them where Kafka transactions left
commit markers or aborted records (which no read_committed consumer receives), so a lag of up
to EXACT_LAG_MAX offsets is confirmed by reading those records: a caught-up partition of a
transactional topic shows 0, not 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from .admin import admin_client, list_topics
from .config import Settings
from .db import connect
from .errors import database_errors
from .replay import KAFKA_TIMEOUT_S, Conn, Watermarks, offset_lookup, quiet_kafka
from .views.registry import ViewRegistry
from .views.status import view_status


@dataclass(frozen=True)
class PartitionStatus:
    group: str
    topic: str
    partition: int
    next_offset: int | None
    high_watermark: int | None  # None: the broker has no such partition (any more)
    lag: int | None
    owner: str | None
    epoch: int
    updated_at: datetime


@dataclass(frozen=True)
class DeadLetterCount:
    topic: str
    error_class: str
    count: int


@dataclass(frozen=True)
class ViewFreshness:
    name: str
    kind: str
    refreshed_at: datetime | None
    duration_ms: float | None


@dataclass(frozen=True)
class Status:
    partitions: tuple[PartitionStatus, ...]
    dead_letters: tuple[DeadLetterCount, ...]
    views: tuple[ViewFreshness, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


EXACT_LAG_MAX = 1000
COUNT_TIMEOUT_S = 3.0


def lag_of(next_offset: int | None, marks: Watermarks | None) -> int | None:
    """Offsets still to process; a partition without a commit yet starts at the low
    watermark (the pipeline's default start)."""
    if marks is None:
        return None
    start = marks.low if next_offset is None else next_offset
    return max(marks.high - start, 0)


def ranges_to_count(
    wanted: Iterable[tuple[str, int, int | None]], marks: Mapping[tuple[str, int], Watermarks]
) -> dict[str, dict[int, tuple[int, int]]]:
    """Per topic, the partitions whose offset lag (1 to EXACT_LAG_MAX) is worth confirming by
    reading, from the lowest next offset any group has there up to the high watermark."""
    out: dict[str, dict[int, tuple[int, int]]] = {}
    for topic, partition, next_offset in wanted:
        m = marks.get((topic, partition))
        lag = lag_of(next_offset, m)
        if m is None or lag is None or not 0 < lag <= EXACT_LAG_MAX:
            continue
        start = m.high - lag
        known = out.setdefault(topic, {}).get(partition)
        out[topic][partition] = (min(start, known[0]) if known else start, m.high)
    return out


def records_lag(
    next_offset: int | None, marks: Watermarks | None, delivered: Sequence[int] | None
) -> int | None:
    """Records still to process: those delivered at or above the start, when they were read;
    otherwise the offset lag."""
    lag = lag_of(next_offset, marks)
    if delivered is None or marks is None or lag is None:
        return lag
    start = marks.high - lag
    return sum(1 for offset in delivered if offset >= start)


def over_lag(partitions: Iterable[PartitionStatus], max_lag: int) -> list[PartitionStatus]:
    return [p for p in partitions if p.lag is not None and p.lag > max_lag]


def _offset_rows(conn: Conn, group: str | None) -> list[tuple[Any, ...]]:
    with database_errors("reading eos_offsets"):
        return conn.execute(
            "SELECT consumer_group, topic, partition, next_offset, owner, epoch, updated_at"
            " FROM eos_offsets WHERE %(group)s::text IS NULL OR consumer_group = %(group)s"
            " ORDER BY consumer_group, topic, partition",
            {"group": group},
        ).fetchall()


def _dead_letters(conn: Conn, topics: Sequence[str] | None) -> tuple[DeadLetterCount, ...]:
    with database_errors("reading dead_letters"):
        rows = conn.execute(
            "SELECT src_topic, error_class, count(*) FROM dead_letters"
            " WHERE %(topics)s::text[] IS NULL OR src_topic = ANY(%(topics)s::text[])"
            " GROUP BY 1, 2 ORDER BY 1, 2",
            {"topics": None if topics is None else list(topics)},
        ).fetchall()
    return tuple(DeadLetterCount(str(t), str(c), int(n)) for t, c, n in rows)


def _broker_view(
    settings: Settings, wanted: Iterable[tuple[str, int, int | None]]
) -> tuple[dict[tuple[str, int], Watermarks], dict[tuple[str, int], list[int]]]:
    """High and low watermarks of every wanted (topic, partition, next offset) the broker has,
    and the offsets delivered where the offset lag is small."""
    wanted = list(wanted)
    existing = list_topics(
        admin_client(settings.kafka_bootstrap, quiet_kafka(settings.kafka_config)), KAFKA_TIMEOUT_S
    )
    by_topic: dict[str, set[int]] = {}
    for topic, partition, _ in wanted:
        if partition < existing.get(topic, 0):
            by_topic.setdefault(topic, set()).add(partition)
    marks: dict[tuple[str, int], Watermarks] = {}
    delivered: dict[tuple[str, int], list[int]] = {}
    with offset_lookup(settings.kafka_bootstrap, settings.kafka_config) as lookup:
        for topic, partitions in by_topic.items():
            for p, m in lookup.watermarks(topic, sorted(partitions)).items():
                marks[(topic, p)] = m
        for topic, ranges in ranges_to_count(wanted, marks).items():
            for p, offsets in lookup.delivered_offsets(topic, ranges, COUNT_TIMEOUT_S).items():
                delivered[(topic, p)] = offsets
    return marks, delivered


def partition_statuses(
    rows: Sequence[tuple[Any, ...]],
    marks: Mapping[tuple[str, int], Watermarks],
    delivered: Mapping[tuple[str, int], Sequence[int]] | None = None,
) -> tuple[PartitionStatus, ...]:
    out = []
    for group, topic, partition, next_offset, owner, epoch, updated_at in rows:
        m = marks.get((topic, partition))
        read = (delivered or {}).get((topic, partition))
        out.append(
            PartitionStatus(
                group,
                topic,
                partition,
                next_offset,
                None if m is None else m.high,
                records_lag(next_offset, m, read),
                owner,
                epoch,
                updated_at,
            )
        )
    return tuple(out)


def collect(settings: Settings, group: str | None, registry: ViewRegistry) -> Status:
    """Database first (connect timeout), then the broker (request timeouts): an unreachable
    server is reported within seconds."""
    with connect(settings.database_url, application_name="eos-status") as conn:
        rows = _offset_rows(conn, group)
        topics = None if group is None else sorted({str(r[1]) for r in rows})
        letters = _dead_letters(conn, topics)
        views = tuple(
            ViewFreshness(s.name, s.kind, s.refreshed_at, s.duration_ms)
            for s in (view_status(conn, v) for v in registry)
        )
    marks, delivered = _broker_view(settings, {(str(r[1]), int(r[2]), r[3]) for r in rows})
    return Status(partition_statuses(rows, marks, delivered), letters, views)
