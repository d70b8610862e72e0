"""Flow control decisions for the poll thread: which worker serves a partition, when to pause
and resume the partitions feeding a worker, and a token bucket for `--max-rate`. Pure."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .events import TopicPartition


def choose_worker(owned: Mapping[int, int]) -> int:
    """The worker (index) with the fewest partitions; ties go to the lowest index."""
    return min(owned, key=lambda w: (owned[w], w))


class Gate(enum.Enum):
    PAUSE = "pause"
    RESUME = "resume"
    KEEP = "keep"


@dataclass(frozen=True)
class Watermarks:
    """Backlog (records queued or buffered in a worker) at which its partitions pause/resume."""

    high: int
    low: int

    def __post_init__(self) -> None:
        if not 0 <= self.low < self.high:
            raise ValueError("backpressure needs 0 <= low watermark < high watermark")

    @classmethod
    def for_batch(cls, batch_size: int) -> Watermarks:
        """Enough backlog for two full batches before pausing, resume below one."""
        high = max(2 * batch_size, 10_000)
        return cls(high=high, low=high // 2)


def gate(backlog: int, paused: bool, marks: Watermarks) -> Gate:
    """Hysteresis: pause above the high watermark, resume below the low one."""
    if not paused and backlog >= marks.high:
        return Gate.PAUSE
    if paused and backlog <= marks.low:
        return Gate.RESUME
    return Gate.KEEP


class TokenBucket:
    """At most `rate` records a second on average, bursts up to `burst`."""

    def __init__(self, rate: float, burst: float | None = None, now: float = 0.0) -> None:
        if rate <= 0:
            raise ValueError("--max-rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self.tokens = self.burst
        self.updated = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, n: int, now: float) -> None:
        """Spend tokens for records already taken (the balance may go negative)."""
        self._refill(now)
        self.tokens -= n

    def wait_s(self, now: float) -> float:
        """How long until the balance is positive again (0 if it is)."""
        self._refill(now)
        return 0.0 if self.tokens > 0 else -self.tokens / self.rate + 1e-3


class PauseBook:
    """Why each partition is paused (backpressure, rate, ...): a partition is paused when it
    gets its first reason and resumed when its last one goes."""

    def __init__(self) -> None:
        self._reasons: dict[TopicPartition, set[str]] = {}

    def has(self, tp: TopicPartition, reason: str) -> bool:
        return reason in self._reasons.get(tp, ())

    def pause(self, tps: Iterable[TopicPartition], reason: str) -> list[TopicPartition]:
        """Add the reason; returns the partitions that were running until now."""
        fresh = []
        for tp in tps:
            reasons = self._reasons.setdefault(tp, set())
            if not reasons:
                fresh.append(tp)
            reasons.add(reason)
        return fresh

    def resume(self, tps: Iterable[TopicPartition], reason: str) -> list[TopicPartition]:
        """Drop the reason; returns the partitions left with none, to run again."""
        ready = []
        for tp in tps:
            reasons = self._reasons.get(tp)
            if reasons and reason in reasons:
                reasons.discard(reason)
                if not reasons:
                    del self._reasons[tp]
                    ready.append(tp)
        return ready

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._reasons.pop(tp, None)
