"""One batch, one PostgreSQL transaction: the handler's results and the offsets commit together.

The steps, in order, each marked in `_commit`:
  1. run the handler over the batch's events;
  2. write the dead letters;
  3. lock the batch's `eos_offsets` rows in a fixed order and check the epoch fence;
  4. advance each partition's next_offset, requiring exactly one row per partition (in the
     same statement as step 3; kept only if the fence holds);
  5. commit.
The fence is checked last, so a consumer stalled in its handler never holds the offsets rows
a new owner needs; if a partition turns out fenced, the whole transaction rolls back and the
caller redoes the batch without it.

A batch is first tried optimistically, without savepoints. If its handler or a write fails,
that transaction is rolled back whole and the batch is redone carefully: the handler inside
savepoints with bounded retries, then bisection that isolates the failing events as dead
letters, and appends that skip keys already stored (a replay's reprocessing).
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
from .offsets import Claim, Outcome, fence_outcome, lock_and_advance, lock_rows, mark_done
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


class _Redo(Exception):
    """The optimistic pass failed; its transaction was rolled back, nothing of it is kept."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def commit_batch(
    ctx: BatchContext,
    claims: Mapping[TopicPartition, Claim],
    items: Sequence[Item],
    statement_timeout_ms: int | None = None,
) -> CommitResult:
    try:
        return _commit(ctx, claims, items, statement_timeout_ms)
    except _Redo as redo:
        ctx.catalog.forget_staging()
        return _commit(ctx, claims, items, statement_timeout_ms, failed=redo.cause)


def _commit(
    ctx: BatchContext,
    claims: Mapping[TopicPartition, Claim],
    items: Sequence[Item],
    statement_timeout_ms: int | None,
    failed: Exception | None = None,
) -> CommitResult:
    """One transaction for the batch: optimistic unless a first pass `failed`."""
    targets = next_offsets(items)
    mine = [claims[tp] for tp in sorted(targets)]
    fenced: dict[TopicPartition, Outcome] = {}
    writer = Writer(ctx.conn, ctx.catalog, optimistic=failed is None)
    with database_errors("batch commit"), ctx.conn.transaction(), ctx.conn.cursor() as cur:
        if statement_timeout_ms:
            cur.execute(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
        if ctx.async_commit:
            cur.execute("SET LOCAL synchronous_commit = off")
        # 1. handler writes
        events = [i for i in items if isinstance(i, Event)]
        if failed is None:
            _run_optimistic(ctx, events, writer)
        else:
            _run_handler(ctx, events, writer, failed)
        # 2. dead letters
        letters = [i for i in items if isinstance(i, DeadLetter)] + writer.dead_letters
        try:
            write_dead_letters(writer, letters)
        except psycopg.errors.UniqueViolation as exc:
            raise _Redo(exc) from exc  # stored before (a replay): the careful pass skips them
        # 3. lock the offsets rows (fixed order) and check the fence; 4. advance behind it
        if ctx.keyed:
            rows, advanced = lock_rows(cur, ctx.group, targets, lock="SHARE"), 0
        else:
            rows, advanced = lock_and_advance(cur, ctx.group, mine, targets)
        for c in mine:
            outcome = fence_outcome(c, rows.get(c.key), check_offset=not ctx.keyed)
            if outcome is not Outcome.OWNED:
                fenced[c.key] = outcome
        if fenced:
            raise psycopg.Rollback()
        # (keyed: several workers commit for one partition, so record the offsets as done)
        done = _offsets_by_partition(items) if ctx.keyed else {}
        if ctx.keyed:
            mark_done(cur, ctx.group, done)
        elif advanced != len(mine):
            raise PartitionFenced(sorted(targets))
    # 5. committed when the block exited cleanly; rolled back when step 3 found a fence
    if fenced:
        return CommitResult(fenced=fenced)
    if writer.optimistic:
        ctx.catalog.staging_committed(writer.created)
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


def _run_optimistic(ctx: BatchContext, events: Sequence[Event], writer: Writer) -> None:
    """The handler without a savepoint: any failure but a transient one redoes the batch."""
    if not events:
        return
    try:
        ctx.spec.handle(events, writer)
    except Exception as exc:
        if is_transient(exc) or isinstance(exc, TransientError):
            raise
        raise _Redo(exc) from exc


def _run_handler(
    ctx: BatchContext, events: Sequence[Event], writer: Writer, failed: Exception
) -> None:
    """Retry the whole batch a bounded number of times, then isolate what fails. The
    optimistic pass counts as the first attempt, unless all it met was a key stored before."""
    if not events:
        return
    error: Exception | None = None
    first = 0 if isinstance(failed, psycopg.errors.UniqueViolation) else 1
    if first:
        _log_failure(ctx, events, 0, failed)
        error = failed
    for attempt in range(first, ctx.handler_retries + 1):
        error = _attempt(ctx, events, writer)
        if error is None:
            return
        _log_failure(ctx, events, attempt, error)
    assert error is not None
    _isolate(ctx, events, writer, error)


def _log_failure(
    ctx: BatchContext, events: Sequence[Event], attempt: int, error: Exception
) -> None:
    log.warning(
        "handler %s failed on %d events (attempt %d/%d): %s: %s",
        ctx.spec.name,
        len(events),
        attempt + 1,
        ctx.handler_retries + 1,
        type(error).__name__,
        error,
    )


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
