"""What the pipeline counts: plain totals for its logs, Prometheus series for `--metrics-port`.

One object records each fact once; the pipeline never touches prometheus_client directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .events import TopicPartition

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# End-to-end latency is observed for at most this many records of a batch, evenly spread:
# the quantiles stay representative, the hot path does not pay per record.
E2E_SAMPLES_PER_BATCH = 64
T = TypeVar("T")
_SIZE_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000)


def sample(values: Sequence[T], at_most: int) -> Sequence[T]:
    """Evenly spaced elements, first and last included."""
    if len(values) <= at_most:
        return values
    step = (len(values) - 1) / (at_most - 1)
    return [values[round(i * step)] for i in range(at_most)]


@dataclass
class RunStats:
    """Totals since start, for log lines and tests."""

    consumed: int = 0
    committed: int = 0
    dead_letters: int = 0
    batches: int = 0
    fenced: int = 0
    rebalances: int = 0
    partitions_claimed: int = 0
    retries: int = 0
    sessions: int = 0


class PipelineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.totals = RunStats()
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._consumed = Counter("eos_messages_consumed", "Records taken from Kafka", registry=r)
        self._committed = Counter(
            "eos_messages_committed", "Events committed to PostgreSQL", registry=r
        )
        self._dead = Counter(
            "eos_dead_letters", "Records sent to dead_letters", ["error_class"], registry=r
        )
        self._batches = Counter("eos_batches", "Committed batch transactions", registry=r)
        self._batch_size = Histogram(
            "eos_batch_size", "Records per committed batch", buckets=_SIZE_BUCKETS, registry=r
        )
        self._commit_seconds = Histogram(
            "eos_commit_seconds",
            "Duration of a batch transaction",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._e2e = Histogram(
            "eos_end_to_end_seconds",
            "Message timestamp to commit",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._retries = Counter("eos_retries", "Transient failures retried", ["reason"], registry=r)
        self._fenced = Counter(
            "eos_fenced_partitions", "Commits refused by the epoch fence", ["outcome"], registry=r
        )
        self._rebalances = Counter("eos_rebalances", "Rebalance callbacks", ["kind"], registry=r)
        self._pauses = Counter("eos_partition_pauses", "Partitions paused", ["reason"], registry=r)
        self._resumes = Counter(
            "eos_partition_resumes", "Partitions resumed", ["reason"], registry=r
        )
        self._holds = Counter(
            "eos_backpressure_holds",
            "Times polling waited for busy workers instead of pausing partitions",
            registry=r,
        )
        self._lag = Gauge(
            "eos_partition_lag",
            "High watermark minus stored next offset",
            ["topic", "partition"],
            registry=r,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def consumed(self, n: int) -> None:
        if n:
            self.totals.consumed += n
            self._consumed.inc(n)

    def batch_committed(
        self,
        events: int,
        dead_letters: Iterable[str],
        size: int,
        duration_s: float,
        timestamps_ms: Sequence[int],
    ) -> None:
        now_ms = time.time() * 1000
        self.totals.batches += 1
        self.totals.committed += events
        self._batches.inc()
        self._committed.inc(events)
        self._batch_size.observe(size)
        self._commit_seconds.observe(duration_s)
        for error_class in dead_letters:
            self.totals.dead_letters += 1
            self._dead.labels(error_class).inc()
        for ts in sample(timestamps_ms, E2E_SAMPLES_PER_BATCH):
            if ts > 0:
                self._e2e.observe(max(now_ms - ts, 0) / 1000)

    def fenced(self, outcome: str, n: int = 1) -> None:
        self.totals.fenced += n
        self._fenced.labels(outcome).inc(n)

    def rebalance(self, kind: str) -> None:
        self.totals.rebalances += 1
        self._rebalances.labels(kind).inc()

    def claimed(self, partitions: int) -> None:
        self.totals.partitions_claimed += partitions

    def retry(self, reason: str) -> None:
        self.totals.retries += 1
        self._retries.labels(reason).inc()

    def paused(self, reason: str, n: int) -> None:
        self._pauses.labels(reason).inc(n)

    def resumed(self, reason: str, n: int) -> None:
        self._resumes.labels(reason).inc(n)

    def held(self) -> None:
        self._holds.inc()

    def session_started(self) -> None:
        self.totals.sessions += 1

    def lag(self, lags: Mapping[TopicPartition, int]) -> None:
        for (topic, partition), value in lags.items():
            self._lag.labels(topic, str(partition)).set(value)
