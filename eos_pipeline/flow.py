"""Flow control decisions for the poll thread: which worker serves a partition, when to pause
and resume the partitions feeding a worker, when to hold off taking records for a moment
instead, and a token bucket for `--max-rate`. Pure."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
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


HOLD_GRACE_S = 1.0


class Hold:
    """Whether the poll thread takes no records for a moment instead of pausing partitions.

    Pausing makes librdkafka drop what it prefetched for those partitions and fetch it again
    on resume, a stall that cost a third of the throughput of two busy workers. So when a
    worker reaches its high watermark while every worker still has work, the poll thread
    holds: it waits for reports until the full workers drain to their low watermark. A
    worker running dry, a pause already in place, or a hold outlasting HOLD_GRACE_S (a slow
    handler, not a burst) ends it, and the watermarks pause partitions as usual, so polling
    goes on and the consumer stays in the group.
    """

    def __init__(self, marks: Watermarks) -> None:
        self.marks = marks
        self.since: float | None = None

    def decide(self, backlogs: Sequence[int], paused: bool, now: float) -> bool:
        """True: hold now. False: poll, pausing as the watermarks say."""
        if paused or not backlogs or min(backlogs) == 0:
            self.since = None
            return False
        if self.since is None:
            if max(backlogs) >= self.marks.high:
                self.since = now
                return True
            return False
        if max(backlogs) <= self.marks.low:
            self.since = None  # drained
            return False
        return not self.expired(now)

    def expired(self, now: float) -> bool:
        """Past the grace the start time is kept, so pausing takes over until a pause lands."""
        return self.since is not None and now - self.since >= HOLD_GRACE_S


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

    def any_for(self, reason: str) -> bool:
        return any(reason in reasons for reasons in self._reasons.values())

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._reasons.pop(tp, None)
