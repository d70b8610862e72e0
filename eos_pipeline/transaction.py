"""One batch, one PostgreSQL transaction: the handler's results and the offsets commit together.

The steps, in order, each marked in `commit_batch`:
  1. run the handler over the batch's events (bounded retries, then bisection isolates the
     failing events as dead letters);
  2. write the dead letters;
  3. lock the batch's `eos_offsets` rows in a fixed order and check the epoch fence;
  4. advance each partition's next_offset, requiring exactly one row per partition;
  5. commit.
The fence is checked last, so a consumer stalled in its handler never holds the offsets rows
a new owner needs; if a partition turns out fenced, the whole transaction rolls back and the
caller redoes the batch without it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import psycopg

from .batching import Item, next_offsets
from .errors import PartitionFenced, TransientError, database_errors, is_transient
from .events import DeadLetter, Event, TopicPartition
from .handlers import HandlerSpec
from .offsets import Claim, Outcome, advance, fence_outcome, lock_rows, mark_done
from .writer import Conn, TableCatalog, Writer, write_dead_letters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommitResult:
    """Committed next offsets, or (nothing committed) the partitions whose fence failed."""

    committed: Mapping[TopicPartition, int] = field(default_factory=dict)
    fenced: Mapping[TopicPartition, Outcome] = field(default_factory=dict)
    done: Mapping[TopicPartition, tuple[int, ...]] = field(default_factory=dict)
    events: int = 0
    dead_letter_classes: tuple[str, ...] = ()

    @property
    def dead_letters(self) -> int:
        return len(self.dead_letter_classes)


@dataclass(frozen=True)
class BatchContext:
    """What stays the same from batch to batch of one consumer."""

    conn: Conn
    catalog: TableCatalog
    spec: HandlerSpec
    group: str
    handler_retries: int = 2
    # `--order key`: several workers commit for one partition, out of offset order; a batch
    # records its offsets in eos_done_offsets and the poll thread moves next_offset.
    keyed: bool = False
    # `--async-commit`: COMMIT does not wait for the WAL flush. A server crash can then lose
    # the last few commits; their offsets are lost with them, so those batches are processed
    # again: still exactly once, for writes that stay inside PostgreSQL.
    async_commit: bool = False


def commit_batch(
    ctx: BatchContext,
    claims: Mapping[TopicPartition, Claim],
    items: Sequence[Item],
    statement_timeout_ms: int | None = None,
) -> CommitResult:
    targets = next_offsets(items)
    mine = [claims[tp] for tp in sorted(targets)]
    fenced: dict[TopicPartition, Outcome] = {}
    with database_errors("batch commit"), ctx.conn.transaction(), ctx.conn.cursor() as cur:
        if statement_timeout_ms:
            cur.execute(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
        if ctx.async_commit:
            cur.execute("SET LOCAL synchronous_commit = off")
        # 1. handler writes
        writer = Writer(ctx.conn, ctx.catalog)
        events = [i for i in items if isinstance(i, Event)]
        _run_handler(ctx, events, writer)
        # 2. dead letters
        letters = [i for i in items if isinstance(i, DeadLetter)] + writer.dead_letters
        write_dead_letters(writer, letters)
        # 3. lock the offsets rows (fixed order) and check the fence
        rows = lock_rows(cur, ctx.group, targets, lock="SHARE" if ctx.keyed else "UPDATE")
        for c in mine:
            outcome = fence_outcome(c, rows.get(c.key), check_offset=not ctx.keyed)
            if outcome is not Outcome.OWNED:
                fenced[c.key] = outcome
        if fenced:
            raise psycopg.Rollback()
        # 4. advance offsets behind the fence (or, keyed, record the offsets as done)
        done = _offsets_by_partition(items) if ctx.keyed else {}
        if ctx.keyed:
            mark_done(cur, ctx.group, done)
        elif advance(cur, ctx.group, mine, targets) != len(mine):
            raise PartitionFenced(sorted(targets))
    # 5. committed when the block exited cleanly; rolled back when step 3 found a fence
    if fenced:
        return CommitResult(fenced=fenced)
    return CommitResult(
        committed={} if ctx.keyed else targets,
        done=done,
        events=len(events) - len(writer.dead_letters),
        dead_letter_classes=tuple(d.error_class for d in letters),
    )


def _offsets_by_partition(items: Sequence[Item]) -> dict[TopicPartition, tuple[int, ...]]:
    out: dict[TopicPartition, list[int]] = {}
    for item in items:
        out.setdefault((item.topic, item.partition), []).append(item.offset)
    return {tp: tuple(offsets) for tp, offsets in out.items()}


def _run_handler(ctx: BatchContext, events: Sequence[Event], writer: Writer) -> None:
    """Retry the whole batch a bounded number of times, then isolate what fails."""
    if not events:
        return
    error: Exception | None = None
    for attempt in range(ctx.handler_retries + 1):
        error = _attempt(ctx, events, writer)
        if error is None:
            return
        log.warning(
            "handler %s failed on %d events (attempt %d/%d): %s: %s",
            ctx.spec.name,
            len(events),
            attempt + 1,
            ctx.handler_retries + 1,
            type(error).__name__,
            error,
        )
    assert error is not None
    _isolate(ctx, events, writer, error)


def _attempt(ctx: BatchContext, events: Sequence[Event], writer: Writer) -> Exception | None:
    """Run the handler inside a savepoint; its writes and dead letters vanish if it fails."""
    mark = len(writer.dead_letters)
    try:
        with ctx.conn.transaction():
            ctx.spec.handle(events, writer)
    except Exception as exc:
        if is_transient(exc) or isinstance(exc, TransientError):
            raise
        del writer.dead_letters[mark:]
        return exc
    return None


def _isolate(ctx: BatchContext, events: Sequence[Event], writer: Writer, error: Exception) -> None:
    """Bisect events known to fail: halves that succeed are kept, single failing events
    become dead letters carrying the error."""
    if len(events) == 1:
        writer.dead_letter(events[0], "HandlerError", f"{type(error).__name__}: {error}")
        log.warning(
            "dead letter %s[%d]@%d: handler failed: %s",
            events[0].topic,
            events[0].partition,
            events[0].offset,
            error,
        )
        return
    mid = len(events) // 2
    for half in (events[:mid], events[mid:]):
        half_error = _attempt(ctx, half, writer)
        if half_error is not None:
            _isolate(ctx, half, writer, half_error)
