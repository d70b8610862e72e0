"""The consistency watermark: every refresh or rebuild records, in its own REPEATABLE READ
transaction and so from the very snapshot the view was computed from, each partition's
next offset in eos_offsets. A view row in eos_view_refreshes therefore says exactly which
input the view reflects.

A refresher whose snapshot predates another refresher's commit of the same view fails at the
watermark upsert with a serialization failure; its whole transaction, refresh included,
rolls back, so a view never goes back in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from ..db import reason
from ..errors import ViewError, database_errors


@dataclass(frozen=True)
class PartitionOffset:
    group: str
    topic: str
    partition: int
    next_offset: int | None  # None: the partition has no committed batch yet

    def describe(self) -> str:
        offset = "-" if self.next_offset is None else str(self.next_offset)
        return f"{self.group}:{self.topic}[{self.partition}]={offset}"


@dataclass(frozen=True)
class Refresh:
    """What one refresh or rebuild did: how long its work took and the input it reflects."""

    view: str
    duration_s: float
    offsets: tuple[PartitionOffset, ...]


def offsets_to_json(offsets: Sequence[PartitionOffset]) -> list[dict[str, Any]]:
    return [
        {"group": o.group, "topic": o.topic, "partition": o.partition, "next_offset": o.next_offset}
        for o in offsets
    ]


def offsets_from_json(data: Sequence[dict[str, Any]] | None) -> tuple[PartitionOffset, ...]:
    return tuple(
        PartitionOffset(d["group"], d["topic"], int(d["partition"]), d["next_offset"])
        for d in data or ()
    )


@contextmanager
def snapshot_transaction(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """One REPEATABLE READ transaction: every statement in it sees the same snapshot, taken by
    its first query (LOCK TABLE and SET do not take one)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


@contextmanager
def view_errors(what: str, view: str) -> Iterator[None]:
    """This project's errors for a view operation: a missing relation means the view's
    migration has not run; connection losses and serialization failures are transient."""
    try:
        with database_errors(f"{what} of {view}"):
            yield
    except pg_errors.UndefinedTable as exc:
        detail = exc.diag.message_primary or reason(exc)
        raise ViewError(
            f"{what} of {view}: {detail}; run the migration that creates it"
            " (create_view_op), e.g. `python -m eos_pipeline migrate`"
        ) from None


@contextmanager
def view_transaction(conn: psycopg.Connection[Any], what: str, view: str) -> Iterator[None]:
    """A snapshot transaction under `view_errors`."""
    with view_errors(what, view), snapshot_transaction(conn):
        yield


def read_offsets(conn: psycopg.Connection[Any]) -> tuple[PartitionOffset, ...]:
    rows = conn.execute(
        "SELECT consumer_group, topic, partition, next_offset FROM eos_offsets"
        " ORDER BY consumer_group, topic, partition"
    ).fetchall()
    return tuple(PartitionOffset(*row) for row in rows)


def record_refresh(
    conn: psycopg.Connection[Any], view: str, kind: str, work: Callable[[], object]
) -> Refresh:
    """Read the offsets, run `work`, then store the watermark, all in the caller's snapshot
    transaction; refreshed_at is the transaction's start, the moment the data reflects."""
    offsets = read_offsets(conn)
    started = time.monotonic()
    work()
    duration = time.monotonic() - started
    conn.execute(
        "INSERT INTO eos_view_refreshes"
        " (view_name, kind, refreshed_at, duration_ms, offsets, refreshes)"
        " VALUES (%s, %s, now(), %s, %s, 1)"
        " ON CONFLICT (view_name) DO UPDATE SET kind = EXCLUDED.kind,"
        " refreshed_at = EXCLUDED.refreshed_at, duration_ms = EXCLUDED.duration_ms,"
        " offsets = EXCLUDED.offsets, refreshes = eos_view_refreshes.refreshes + 1",
        (view, kind, duration * 1000.0, Jsonb(offsets_to_json(offsets))),
    )
    return Refresh(view, duration, offsets)
