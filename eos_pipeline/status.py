"""What `status` reports: per partition how far the stored offsets are behind the broker,
who owns each partition, the dead letters by error class and how fresh each view is.

Lag counts offsets: a partition fed by Kafka transactions ends with a commit marker no
consumer ever receives, so a caught-up partition may show a lag of 1.
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


def lag_of(next_offset: int | None, marks: Watermarks | None) -> int | None:
    """Offsets still to process; a partition without a commit yet starts at the low
    watermark (the pipeline's default start)."""
    if marks is None:
        return None
    start = marks.low if next_offset is None else next_offset
    return max(marks.high - start, 0)


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


def _watermarks(
    settings: Settings, wanted: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], Watermarks]:
    """High and low watermarks of every wanted partition the broker has."""
    existing = list_topics(
        admin_client(settings.kafka_bootstrap, quiet_kafka(settings.kafka_config)), KAFKA_TIMEOUT_S
    )
    by_topic: dict[str, list[int]] = {}
    for topic, partition in wanted:
        if partition < existing.get(topic, 0):
            by_topic.setdefault(topic, []).append(partition)
    out: dict[tuple[str, int], Watermarks] = {}
    with offset_lookup(settings.kafka_bootstrap, settings.kafka_config) as lookup:
        for topic, partitions in by_topic.items():
            for p, marks in lookup.watermarks(topic, partitions).items():
                out[(topic, p)] = marks
    return out


def partition_statuses(
    rows: Sequence[tuple[Any, ...]], marks: Mapping[tuple[str, int], Watermarks]
) -> tuple[PartitionStatus, ...]:
    out = []
    for group, topic, partition, next_offset, owner, epoch, updated_at in rows:
        m = marks.get((topic, partition))
        out.append(
            PartitionStatus(
                group,
                topic,
                partition,
                next_offset,
                None if m is None else m.high,
                lag_of(next_offset, m),
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
    marks = _watermarks(settings, {(str(r[1]), int(r[2])) for r in rows})
    return Status(partition_statuses(rows, marks), letters, views)
