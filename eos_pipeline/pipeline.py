"""The run loop: Kafka in -> batches -> one PostgreSQL transaction per batch (results + offsets).

A `Session` is one consumer and one database connection, from subscribe to close. When the
database or the broker fails in a way the session cannot ride out, the `Pipeline` closes it
without committing, waits with backoff, and opens a new one, which re-claims its partitions and
resumes from the offsets stored in PostgreSQL. Kafka's own committed offsets are never used.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Literal, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka import KafkaError as RdKafkaError

from .batching import BatchPolicy, Item, source_of
from .db import connect
from .errors import ConnectionFailed, EosError, KafkaError, TransientError, database_errors
from .events import Headers
from .events import TopicPartition as TP
from .flow import Gate, Hold, PauseBook, TokenBucket, Watermarks, choose_worker, gate
from .handlers import DEFAULT_HANDLER, HandlerSpec, decode_record, load_handler
from .logs import LIBRDKAFKA_LOGGER
from .metrics import PipelineMetrics, RunStats
from .offsets import Claim, Outcome, advance_watermark, claim, fence_outcome, lock_rows
from .progress import PartitionProgress
from .transaction import BatchContext, CommitResult
from .workers import Chunk, ClaimTable, Report, Worker
from .writer import Conn, TableCatalog, prepare_connection

log = logging.getLogger(__name__)

StartPolicy = Literal["earliest", "latest"]
IDLE_FENCE_CHECK_S = 2.0
# While holding (see _hold), how often the poll thread looks at the backlogs again.
HOLD_SLICE_S = 0.05
ASSIGNMENT_WAIT_S = 60.0  # --exit-when-idle: how long to wait for a first assignment


@dataclass(frozen=True)
class RunConfig:
    kafka_bootstrap: str
    database_url: str
    group_id: str = "eos-pipeline"
    topics: tuple[str, ...] = ("orders",)
    handler: str = DEFAULT_HANDLER
    batch: BatchPolicy = field(default_factory=BatchPolicy)
    assignor: str = "cooperative-sticky"
    start: StartPolicy = "earliest"
    kafka_config: Mapping[str, str] = field(default_factory=dict)
    handler_retries: int = 2
    revoke_budget: float = 0.5
    idle_exit_s: float | None = None
    workers: int = 1
    max_rate: float | None = None
    order: Literal["partition", "key"] = "partition"
    async_commit: bool = False
    mirror_offsets_to_kafka: bool = False
    owner: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )


class BatchObserver(Protocol):
    """Something running beside the pipeline that wants to hear about commits (views)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def batch_committed(self, count: int = 1) -> None: ...


# -- pure decisions ---------------------------------------------------------------------------
def consumer_config(cfg: RunConfig) -> dict[str, str | int | float | bool]:
    """librdkafka settings: Kafka commits off, read_committed, user settings on top."""
    conf: dict[str, str | int | float | bool] = {
        "bootstrap.servers": cfg.kafka_bootstrap,
        "group.id": cfg.group_id,
        "partition.assignment.strategy": cfg.assignor,
        "auto.offset.reset": cfg.start,
        "isolation.level": "read_committed",
        "client.id": f"eos-pipeline-{cfg.owner}",
    }
    conf.update(cfg.kafka_config)
    # Non-negotiable, whatever the user passed: offsets live in PostgreSQL only, and the Kafka
    # group is the group the offsets rows (and their fence) belong to.
    conf.update(
        {
            "group.id": cfg.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
        }
    )
    if str(conf.get("group.protocol", "classic")) == "consumer":
        conf.pop("partition.assignment.strategy", None)  # the broker assigns (KIP-848)
    return conf


def is_incremental(conf: Mapping[str, Any]) -> bool:
    """Whether rebalances hand over partitions incrementally (cooperative or KIP-848)."""
    if str(conf.get("group.protocol", "classic")) == "consumer":
        return True
    return str(conf.get("partition.assignment.strategy", "")).strip() == "cooperative-sticky"


def start_offset(c: Claim, policy: StartPolicy) -> int:
    """Where a claimed partition starts: its stored offset, else the explicit reset policy."""
    if c.next_offset is not None:
        return c.next_offset
    return OFFSET_BEGINNING if policy == "earliest" else OFFSET_END


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 10.0) -> float:
    """Exponential backoff with full jitter on its upper half."""
    ceiling = min(cap, base * (2 ** min(max(attempt, 0), 30)))  # clamped: no float overflow
    return float(ceiling / 2 + random.random() * ceiling / 2)


def revoke_timeout_ms(conf: Mapping[str, Any], budget: float) -> int:
    return int(int(conf.get("max.poll.interval.ms", 300000)) * budget)


# -- one consumer, its workers and their connections ------------------------------------------
class Session:
    """A consumer subscribed to the topics; the poll thread (this object) claims partitions,
    dispatches their records to workers, and applies what the workers report back."""

    def __init__(
        self,
        cfg: RunConfig,
        spec: HandlerSpec,
        conn: Conn,
        metrics: PipelineMetrics,
        on_commit: Callable[[CommitResult], None],
    ) -> None:
        self.cfg = cfg
        self.spec = spec
        self.conn = conn
        self.metrics = metrics
        self.on_commit = on_commit
        self.conf = consumer_config(cfg)
        self.incremental = is_incremental(self.conf)
        self.claims = ClaimTable()
        self.keyed = cfg.order == "key"
        self.progress: dict[TP, PartitionProgress] = {}  # --order key only
        self.failure: BaseException | None = None
        self._fence_checked_at = time.monotonic()
        self._reports: deque[Report] = deque()
        self._reported = threading.Event()
        self._worker_conns: list[Conn] = []
        self.workers = self._start_workers()
        self.serving: dict[TP, int] = {}  # partition -> worker index
        self.pauses = PauseBook()
        self.marks = Watermarks.for_batch(cfg.batch.max_messages)
        self.hold = Hold(self.marks)
        self.bucket = TokenBucket(cfg.max_rate, now=time.monotonic()) if cfg.max_rate else None
        self.consumer = Consumer(self.conf, logger=logging.getLogger(LIBRDKAFKA_LOGGER))
        self.consumer.subscribe(
            list(cfg.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _start_workers(self) -> list[Worker]:
        threaded = self.cfg.workers > 1
        workers = []
        for index in range(self.cfg.workers):
            conn = self.conn
            if threaded:
                conn = connect(self.cfg.database_url, application_name=f"eos-worker-{index}")
                prepare_connection(conn)
                self._worker_conns.append(conn)
            ctx = BatchContext(
                conn,
                TableCatalog(),
                self.spec,
                self.cfg.group_id,
                self.cfg.handler_retries,
                keyed=self.keyed,
                async_commit=self.cfg.async_commit,
            )
            worker = Worker(index, ctx, self.claims, self.cfg.batch, self._report, threaded)
            worker.start()
            workers.append(worker)
        return workers

    # Rebalance callbacks: a few lines each, named methods do the work.
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalance("assign")
        try:
            assigned = self._claim([(p.topic, p.partition) for p in partitions])
        except BaseException as exc:
            self.failure, assigned = exc, []
        self._assign(assigned)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalance("revoke")
        tps = [(p.topic, p.partition) for p in partitions]
        try:
            self._finish_for_revoke(tps)
        finally:
            self._release(tps)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalance("lost")
        self._release([(p.topic, p.partition) for p in partitions])

    # -- assignment ---------------------------------------------------------------------------
    def _claim(self, tps: Sequence[TP]) -> list[TopicPartition]:
        if not tps:
            return []
        done: dict[TP, set[int]] | None = {} if self.keyed else None
        claims = claim(self.conn, self.cfg.group_id, self.cfg.owner, tps, done)
        self.claims.put(claims)
        self.metrics.claimed(len(claims))
        if done is not None:
            for tp, c in claims.items():
                self.progress[tp] = PartitionProgress(c.next_offset, done.get(tp, ()))
        for tp in claims:
            if tp not in self.serving:
                load = {w.index: 0 for w in self.workers}
                for served_by in self.serving.values():
                    load[served_by] += 1
                self.serving[tp] = choose_worker(load)
        log.info(
            "assigned %s",
            ", ".join(
                f"{t}[{p}]@{_fmt(c.next_offset)} epoch {c.epoch}"
                for (t, p), c in sorted(claims.items())
            ),
        )
        return [
            TopicPartition(c.topic, c.partition, start_offset(c, self.cfg.start))
            for c in claims.values()
        ]

    def _assign(self, partitions: list[TopicPartition]) -> None:
        if self.incremental:
            self.consumer.incremental_assign(partitions)
        else:
            self.consumer.assign(partitions)

    def _release(self, tps: Sequence[TP]) -> None:
        """Forget partitions: drop their queued records; never commit for them again."""
        self.claims.remove(tps)
        for worker in self.workers:
            worker.drop(tps)
        for tp in tps:
            self.serving.pop(tp, None)
            self.pauses.forget([tp])
            self.progress.pop(tp, None)
        if tps:
            log.info("released %s", _names(tps))
        parts = [TopicPartition(t, p) for t, p in tps]
        if self.incremental:
            self.consumer.incremental_unassign(parts)
        else:
            self.consumer.unassign()

    def _finish_for_revoke(self, tps: Sequence[TP]) -> None:
        """Commit the revoked partitions' in-flight records within the budget, or drop them."""
        if self.failure is not None:
            return
        budget_ms = revoke_timeout_ms(self.conf, self.cfg.revoke_budget)
        involved = (
            {w.index for w in self.workers}
            if self.keyed
            else {self.serving[tp] for tp in tps if tp in self.serving}
        )
        for worker in self.workers:
            if worker.index not in involved or not worker.backlog():
                continue
            try:
                if not worker.finish(budget_ms / 1000, statement_timeout_ms=budget_ms):
                    log.warning("worker %d did not finish within the revoke budget", worker.index)
            except Exception as exc:
                log.warning("in-flight batch dropped on revoke: %s", exc)
                self.failure = self.failure or exc
        self._apply_reports()

    # -- the loop -----------------------------------------------------------------------------
    def step(self) -> None:
        """Poll once, hand the records to their workers, apply what the workers report."""
        if self._hold():
            return
        inline = self.workers[0] if not self.workers[0].threaded else None
        now = time.monotonic()
        wait = max(inline.time_left(now), 0.01) if inline and inline.backlog() else 0.1
        messages = self.consumer.consume(num_messages=1000, timeout=wait)
        self._raise_failure()
        self._dispatch(self._accept(messages))
        if inline is not None:
            inline.pump()
        self._apply_reports()
        self._throttle(len(messages))
        if not messages and not any(w.backlog() for w in self.workers):
            self._check_fence_when_idle()

    def _report(self, report: Report) -> None:
        """Called by the workers (from their threads, or inline)."""
        self._reports.append(report)
        self._reported.set()

    def _hold(self) -> bool:
        """Take nothing while the threaded workers are busy and one is full (flow.Hold):
        wait for their reports instead."""
        if not self._holding(time.monotonic()):
            return False
        self._reported.wait(HOLD_SLICE_S)
        self._reported.clear()
        self._raise_failure()
        self._apply_reports()
        return True

    def _holding(self, now: float) -> bool:
        if not self.workers[0].threaded:
            return False
        started = self.hold.since is None
        backlogs = [backlog for _, backlog in self._feeds()]
        if not self.hold.decide(backlogs, self.pauses.any_for("backpressure"), now):
            return False
        if started:
            self.metrics.held()
        return True

    def _dispatch(self, items: Iterable[Item]) -> None:
        """Partition order: a partition's records go to its worker. Key order (`--order key`):
        a key's records go to one worker, and each partition tracks what is done."""
        chunks: dict[tuple[TP, int], list[Item]] = {}
        for item in items:
            tp = source_of(item)
            if tp not in self.serving:
                continue
            worker = self.serving[tp]
            if self.keyed:
                progress = self.progress[tp]
                progress.dispatched(item.offset)
                if progress.is_done(item.offset):
                    continue  # committed before a restart, above the stored offset
                if item.key is not None:
                    worker = zlib.crc32(item.key) % len(self.workers)
            chunks.setdefault((tp, worker), []).append(item)
        for (tp, worker), chunk in chunks.items():
            c = self.claims.get(tp)
            if c is not None:
                self.workers[worker].submit(Chunk(tp, c.epoch, chunk))

    def _apply_reports(self) -> None:
        while self._reports:
            report = self._reports.popleft()
            if report.failure is not None:
                raise report.failure
            assert report.result is not None
            if report.result.fenced:
                self._fenced(report.result.fenced)
            else:
                self._committed(report)
                for tp, offsets in report.result.done.items():
                    if tp in self.progress:
                        self.progress[tp].completed(offsets)
        if self.keyed:
            self._advance_watermarks()

    def _advance_watermarks(self) -> None:
        """Store each partition's offset up to where everything below is committed."""
        for tp, progress in list(self.progress.items()):
            mark = progress.watermark()
            c = self.claims.get(tp)
            if c is None or mark is None or mark == c.next_offset:
                continue
            if advance_watermark(self.conn, self.cfg.group_id, c, mark):
                self.claims.advance(tp, c.epoch, mark)
                progress.advanced(mark)
            else:
                self._fence_checked_at = 0.0  # look at the row now
                self._check_fence_when_idle()

    def _throttle(self, taken: int) -> None:
        """Backpressure per worker, and the rate limit: pause and resume partitions, while
        polling goes on so the consumer stays in the group."""
        now = time.monotonic()
        holding = self._holding(now)  # the next step holds instead of pausing
        for tps, backlog in self._feeds():
            paused = any(self.pauses.has(tp, "backpressure") for tp in tps)
            decision = gate(backlog, paused, self.marks)
            if decision is Gate.PAUSE and not holding:
                self._pause(self.pauses.pause(tps, "backpressure"), "backpressure")
            elif decision is Gate.RESUME:
                self._resume(self.pauses.resume(tps, "backpressure"), "backpressure")
        if self.bucket is not None:
            self.bucket.take(taken, now)
            if self.bucket.wait_s(now) > 0:
                self._pause(self.pauses.pause(self.serving, "rate"), "rate")
            else:
                self._resume(self.pauses.resume(self.serving, "rate"), "rate")

    def _feeds(self) -> list[tuple[list[TP], int]]:
        """Which partitions feed which backlog: a worker's own partitions, or (keyed) every
        partition feeds every worker, so the fullest worker decides."""
        if self.keyed:
            return [(list(self.serving), max(w.backlog() for w in self.workers))]
        return [
            ([tp for tp, w in self.serving.items() if w == worker.index], worker.backlog())
            for worker in self.workers
        ]

    def _pause(self, tps: Sequence[TP], reason: str) -> None:
        if tps:
            self.consumer.pause([TopicPartition(t, p) for t, p in tps])
            self.metrics.paused(reason, len(tps))

    def _resume(self, tps: Sequence[TP], reason: str) -> None:
        if tps:
            self.consumer.resume([TopicPartition(t, p) for t, p in tps])
            self.metrics.resumed(reason, len(tps))

    def _check_fence_when_idle(self) -> None:
        """A caught-up consumer commits nothing, so it would not meet the fence: look at the
        rows now and then, so a replay (or a new owner) is noticed without new records."""
        now = time.monotonic()
        held = self.claims.snapshot()
        if now - self._fence_checked_at < IDLE_FENCE_CHECK_S or not held:
            return
        self._fence_checked_at = now
        with database_errors("idle fence check"), self.conn.cursor() as cur:
            rows = lock_rows(cur, self.cfg.group_id, held, lock=None)
        outcomes = {
            tp: o
            for tp, c in held.items()
            if (o := fence_outcome(c, rows.get(tp))) is not Outcome.OWNED
        }
        if outcomes:
            self._fenced(outcomes)

    def _accept(self, messages: Sequence[Message]) -> list[Item]:
        held = self.claims.snapshot()
        items: list[Item] = []
        for m in messages:
            err = m.error()
            if err is not None:
                self._on_kafka_error(err)
                continue
            topic, partition, offset = str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)
            c = held.get((topic, partition))
            if c is None or (c.next_offset is not None and offset < c.next_offset):
                continue  # not ours (any more), or already committed
            raw_headers = m.headers()
            items.append(
                decode_record(
                    self.spec,
                    topic,
                    partition,
                    offset,
                    _as_bytes(m.key()),
                    _as_bytes(m.value()),
                    m.timestamp()[1],
                    _headers(raw_headers) if raw_headers else (),
                )
            )
        self.metrics.consumed(len(items))
        return items

    def _on_kafka_error(self, err: RdKafkaError) -> None:
        if err.code() == RdKafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise KafkaError(f"fatal consumer error: {err.str()}")
        log.warning("consumer: %s", err.str())

    def _raise_failure(self) -> None:
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure

    def _committed(self, report: Report) -> None:
        result = report.result
        assert result is not None
        self.metrics.batch_committed(
            result.events,
            result.dead_letter_classes,
            report.size,
            report.duration_s,
            report.timestamps_ms,
        )
        self.metrics.lag(self._lags(result.committed))
        if self.cfg.mirror_offsets_to_kafka:
            self._mirror(result.committed)
        self.on_commit(result)

    def _mirror(self, committed: Mapping[TP, int]) -> None:
        """Copy the committed offsets to the group's Kafka offsets, for Kafka's lag tools only:
        they are never read back (assignment always carries the PostgreSQL offset)."""
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in committed.items()],
                asynchronous=True,
            )
        except KafkaException as exc:
            log.warning("mirroring offsets to Kafka failed (harmless): %s", exc)

    def _lags(self, committed: Mapping[TP, int]) -> dict[TP, int]:
        """From the high watermarks of the last fetch responses: no broker round trip."""
        lags: dict[TP, int] = {}
        for (topic, partition), offset in committed.items():
            try:
                _, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except KafkaException:
                continue
            if high is not None and high >= 0:
                lags[(topic, partition)] = max(int(high) - offset, 0)
        return lags

    def _fenced(self, outcomes: Mapping[TP, Outcome]) -> None:
        """LOST: stop fetching and never commit. RECLAIM: claim again, restart from the row."""
        for outcome in outcomes.values():
            self.metrics.fenced(outcome.value)
        lost = [tp for tp, o in outcomes.items() if o is Outcome.LOST]
        reclaim = [tp for tp, o in outcomes.items() if o is Outcome.RECLAIM]
        if lost:
            log.warning("fenced: %s now owned by another consumer; stopping them", _names(lost))
            self.claims.remove(lost)
            for tp in lost:
                self.serving.pop(tp, None)
                self.pauses.forget([tp])
            self.consumer.pause([TopicPartition(t, p) for t, p in lost])
        if reclaim:
            log.warning("fenced: %s reset by a replay; re-claiming", _names(reclaim))
            for position in self._claim(reclaim):
                self.consumer.seek(position)

    def close(self, commit: bool) -> None:
        """Leave the group; with commit=True the in-flight records are committed first."""
        try:
            for worker in self.workers:
                worker.stop(commit=commit and self.failure is None)
            if commit and self.failure is None:
                self._apply_reports()
        finally:
            if not commit:
                self.failure = self.failure or EosError("closing without commit")
            try:
                self.consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("consumer close: %s", exc)
            for conn in self._worker_conns:
                conn.close()


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _headers(raw: Any) -> Headers:
    if not raw:
        return ()
    items = raw.items() if isinstance(raw, dict) else raw
    return tuple((str(k), _as_bytes(v)) for k, v in items)


def _fmt(offset: int | None) -> str:
    return "start" if offset is None else str(offset)


def _names(tps: Iterable[TP]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps))


# -- the pipeline: sessions, recovery, signals ------------------------------------------------
class Pipeline:
    def __init__(
        self,
        cfg: RunConfig,
        spec: HandlerSpec | None = None,
        observers: Sequence[BatchObserver] = (),
        on_commit: Callable[[CommitResult], None] | None = None,
        metrics: PipelineMetrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.spec = spec or load_handler(cfg.handler)
        self.observers = list(observers)
        self.metrics = metrics or PipelineMetrics()
        self.stats = self.metrics.totals
        self._stop = threading.Event()
        self._on_commit_extra = on_commit
        self._seen: tuple[int, int] = (0, 0)
        self._last_progress = self._started_at = time.monotonic()

    def request_stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """First SIGINT/SIGTERM: finish the batch and exit 0. Second: exit at once."""

        def handler(signum: int, frame: FrameType | None) -> None:
            if self._stop.is_set():
                log.warning("second signal: exiting now; the open transaction rolls back")
                os._exit(128 + signum)
            log.info("signal %d: committing the in-flight batch, then stopping", signum)
            self._stop.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def _stop_if_idle(self) -> None:
        """Idle: nothing consumed and nothing committed for a while (paused partitions whose
        workers are still committing are not idle). The clock starts when the first partition
        is claimed: joining the group on a fresh broker can take seconds, and a consumer joining
        a cooperative group gets an empty assignment first, its partitions a round later."""
        if self.cfg.idle_exit_s is None:
            return
        now = time.monotonic()
        if self.stats.partitions_claimed == 0:
            self._last_progress = now
            if now - self._started_at > max(ASSIGNMENT_WAIT_S, self.cfg.idle_exit_s):
                log.warning("no partitions assigned within %.0f s: stopping", ASSIGNMENT_WAIT_S)
                self._stop.set()
            return
        progress = (self.stats.consumed, self.stats.batches)
        if progress != self._seen:
            self._seen, self._last_progress = progress, now
        elif now - self._last_progress >= self.cfg.idle_exit_s:
            log.info("idle for %.1f s: stopping", self.cfg.idle_exit_s)
            self._stop.set()

    def _committed(self, result: CommitResult) -> None:
        for o in self.observers:
            o.batch_committed(1)
        if self._on_commit_extra is not None:
            self._on_commit_extra(result)

    def run(self) -> RunStats:
        for o in self.observers:
            o.start()
        try:
            attempt = 0
            while not self._stop.is_set():
                batches = self.stats.batches
                try:
                    self._run_session()
                    attempt = 0
                except (TransientError, ConnectionFailed, KafkaError) as exc:
                    # A session that committed something was healthy: start backing off anew.
                    attempt = 0 if self.stats.batches != batches else attempt
                    delay = backoff_delay(attempt)
                    self.metrics.retry(type(exc).__name__)
                    attempt += 1
                    log.warning("%s; retrying in %.1f s", exc, delay)
                    self._stop.wait(delay)
        finally:
            for o in self.observers:
                o.stop()
        log.info(
            "stopped: %d consumed, %d committed, %d dead letters, %d batches",
            self.stats.consumed,
            self.stats.committed,
            self.stats.dead_letters,
            self.stats.batches,
        )
        return self.stats

    def _run_session(self) -> None:
        conn = connect(self.cfg.database_url, application_name=f"eos-pipeline {self.cfg.owner}")
        try:
            prepare_connection(conn)
            self.metrics.session_started()
            session = Session(self.cfg, self.spec, conn, self.metrics, self._committed)
            clean = False
            try:
                while not self._stop.is_set():
                    session.step()
                    self._stop_if_idle()
                clean = True
            finally:
                session.close(commit=clean)
        finally:
            conn.close()
