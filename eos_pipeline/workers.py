"""Workers: each builds batches from the records of its partitions and commits them, results
plus those partitions' offsets behind the fence, on its own PostgreSQL connection.

With `--workers 1` the one worker runs inline in the poll thread; with more, each runs in a
thread of its own, so a slow handler holds up neither heartbeats nor other partitions. A
partition is served by one worker at a time, so its order is kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from .batching import BatchBuffer, BatchPolicy, Item, source_of, without
from .events import Event
from .events import TopicPartition as TP
from .metrics import E2E_SAMPLES_PER_BATCH, sample
from .offsets import Claim
from .transaction import BatchContext, CommitResult, commit_batch

log = logging.getLogger(__name__)


class ClaimTable:
    """The partitions this consumer holds; shared by the poll thread and the workers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: dict[TP, Claim] = {}

    def get(self, tp: TP) -> Claim | None:
        with self._lock:
            return self._claims.get(tp)

    def put(self, claims: Mapping[TP, Claim]) -> None:
        with self._lock:
            self._claims.update(claims)

    def remove(self, tps: Iterable[TP]) -> None:
        with self._lock:
            for tp in tps:
                self._claims.pop(tp, None)

    def snapshot(self) -> dict[TP, Claim]:
        with self._lock:
            return dict(self._claims)

    def advance(self, tp: TP, epoch: int, next_offset: int) -> None:
        """Record a commit, unless the partition was re-claimed (or released) meanwhile."""
        with self._lock:
            current = self._claims.get(tp)
            if current is not None and current.epoch == epoch:
                self._claims[tp] = current.advanced(next_offset)

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._claims)


@dataclass(frozen=True)
class Chunk:
    """Records of one partition, taken under the claim with this epoch."""

    tp: TP
    epoch: int
    items: list[Item]


@dataclass(frozen=True)
class Report:
    """What a worker tells the poll thread after each commit attempt (or failure)."""

    result: CommitResult | None = None
    size: int = 0
    duration_s: float = 0.0
    timestamps_ms: tuple[int, ...] = ()
    failure: BaseException | None = None


@dataclass
class _Pending:
    """A request from the poll thread: commit everything now (a revoke, a stop)."""

    done: threading.Event = field(default_factory=threading.Event)
    statement_timeout_ms: int | None = None


class Worker:
    def __init__(
        self,
        index: int,
        ctx: BatchContext,
        claims: ClaimTable,
        policy: BatchPolicy,
        report: Callable[[Report], None],
        threaded: bool,
    ) -> None:
        self.index = index
        self.ctx = ctx
        self.claims = claims
        self.report = report
        self.threaded = threaded
        self.buffer = BatchBuffer(policy)
        self._epochs: dict[TP, int] = {}
        self._queue: deque[Chunk] = deque()
        self._queued = 0
        self._requests: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- poll-thread side ---------------------------------------------------------------------
    def start(self) -> None:
        if self.threaded:
            self._thread = threading.Thread(
                target=self._run, name=f"eos-worker-{self.index}", daemon=True
            )
            self._thread.start()

    def submit(self, chunk: Chunk) -> None:
        with self._cond:
            self._queue.append(chunk)
            self._queued += len(chunk.items)
            self._cond.notify()

    def backlog(self) -> int:
        """Records queued or buffered, not yet committed."""
        with self._cond:
            return self._queued + len(self.buffer.items)

    def finish(self, timeout_s: float, statement_timeout_ms: int | None = None) -> bool:
        """Commit everything queued and buffered now; False if that did not end in time."""
        if not self.threaded:
            self._absorb()
            self.commit(statement_timeout_ms)
            return True
        if self._thread is None or not self._thread.is_alive():
            return False  # it failed and reported why; nothing is left to commit
        request = _Pending(statement_timeout_ms=statement_timeout_ms)
        with self._cond:
            self._requests.append(request)
            self._cond.notify()
        if request.done.wait(timeout_s):
            return True
        self.ctx.conn.cancel()  # its transaction rolls back: no commit after the deadline
        return request.done.wait(2.0)

    def drop(self, tps: Iterable[TP]) -> None:
        """Forget released partitions' records (their commits are refused anyway)."""
        gone = set(tps)
        with self._cond:
            kept = deque(c for c in self._queue if c.tp not in gone)
            self._queued = sum(len(c.items) for c in kept)
            self._queue = kept
            if not self.threaded:
                self.buffer.drop(gone)

    def stop(self, commit: bool, timeout_s: float = 30.0) -> None:
        if commit:
            self.finish(timeout_s)
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def time_left(self, now: float) -> float:
        return self.buffer.time_left(now)

    # -- the batch: inline (poll thread) or in the worker's thread ----------------------------
    def pump(self) -> None:
        """Take what was submitted; commit the batches that are due."""
        self._absorb()
        self._commit_due()

    def _absorb(self) -> None:
        with self._cond:
            chunks, self._queue, self._queued = list(self._queue), deque(), 0
        for chunk in chunks:
            if self._epochs.get(chunk.tp) != chunk.epoch:
                self.buffer.drop({chunk.tp})  # records taken under an older claim
                self._epochs[chunk.tp] = chunk.epoch
            self.buffer.add(chunk.items, time.monotonic())

    def commit(self, statement_timeout_ms: int | None = None) -> None:
        """Commit everything buffered, one batch (at most --batch-size records) at a time."""
        while self.buffer.items:
            self._commit_batch(statement_timeout_ms)

    def _commit_due(self) -> None:
        while self.buffer.is_due(time.monotonic()):
            self._commit_batch()

    def _commit_batch(self, statement_timeout_ms: int | None = None) -> None:
        """Commit one batch; partitions found fenced are reported and left out."""
        held = {
            tp: c for tp, c in self.claims.snapshot().items() if self._epochs.get(tp) == c.epoch
        }
        batch = self.buffer.take(self.buffer.policy.max_messages)
        items = [i for i in batch if source_of(i) in held]
        while items:
            started = time.monotonic()
            result = commit_batch(self.ctx, held, items, statement_timeout_ms)
            self.report(
                Report(
                    result,
                    len(items),
                    time.monotonic() - started,
                    tuple(
                        i.timestamp_ms
                        for i in sample(items, E2E_SAMPLES_PER_BATCH)
                        if isinstance(i, Event)
                    ),
                )
            )
            if not result.fenced:
                for tp, offset in result.committed.items():
                    self.claims.advance(tp, held[tp].epoch, offset)
                return
            for tp in result.fenced:
                self._epochs.pop(tp, None)
            items = without(items, result.fenced.keys())

    def _has_work(self) -> bool:
        return bool(self._queue or self._requests or self._stopping) or self.buffer.is_due(
            time.monotonic()
        )

    def _idle_wait(self) -> float | None:
        return self.buffer.time_left(time.monotonic()) if self.buffer.items else None

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._queue or self._requests or self._stopping) and not (
                        self.buffer.is_due(time.monotonic())
                    ):
                        wait = (
                            self.buffer.time_left(time.monotonic()) if self.buffer.items else None
                        )
                        self._cond.wait(wait)
                    stopping = self._stopping
                    requests = list(self._requests)
                    self._requests.clear()
                if stopping and not requests:
                    return
                self._absorb()
                if requests:
                    self.commit(requests[-1].statement_timeout_ms)
                    for r in requests:
                        r.done.set()
                else:
                    self._commit_due()
        except BaseException as exc:  # reported to the poll thread, which ends the session
            self.buffer.take()
            self.report(Report(failure=exc))
            with self._cond:
                for r in self._requests:
                    r.done.set()
