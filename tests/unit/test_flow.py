"""Flow-control decisions of the poll thread, without a broker."""

from __future__ import annotations

import pytest

from eos_pipeline.flow import (
    HOLD_GRACE_S,
    Gate,
    Hold,
    PauseBook,
    TokenBucket,
    Watermarks,
    choose_worker,
    gate,
)


def test_choose_worker_balances_and_breaks_ties_low() -> None:
    assert choose_worker({0: 2, 1: 1, 2: 1}) == 1
    assert choose_worker({0: 0, 1: 0}) == 0


def test_watermarks_hysteresis() -> None:
    marks = Watermarks(high=100, low=50)
    assert gate(99, paused=False, marks=marks) is Gate.KEEP
    assert gate(100, paused=False, marks=marks) is Gate.PAUSE
    assert gate(60, paused=True, marks=marks) is Gate.KEEP
    assert gate(50, paused=True, marks=marks) is Gate.RESUME
    assert Watermarks.for_batch(200) == Watermarks(high=10_000, low=5_000)
    assert Watermarks.for_batch(20_000) == Watermarks(high=40_000, low=20_000)
    with pytest.raises(ValueError):
        Watermarks(high=10, low=10)


def test_token_bucket_allows_the_rate_on_average() -> None:
    bucket = TokenBucket(rate=100, burst=100, now=0.0)
    bucket.take(100, now=0.0)
    assert bucket.wait_s(0.0) > 0  # burst spent
    assert bucket.wait_s(0.5) == 0  # 50 tokens back
    bucket.take(300, now=1.0)  # balance 100 (capped at the burst) - 300
    assert bucket.wait_s(1.0) == pytest.approx(2.0, abs=0.01)
    assert bucket.wait_s(3.01) == 0
    with pytest.raises(ValueError):
        TokenBucket(rate=0)


def test_pause_book_runs_a_partition_again_only_when_no_reason_is_left() -> None:
    book = PauseBook()
    a, b = ("t", 0), ("t", 1)
    assert book.pause([a, b], "backpressure") == [a, b]
    assert book.pause([a], "rate") == []  # already paused
    assert book.resume([a, b], "backpressure") == [b]  # a still rate-limited
    assert book.has(a, "rate") and not book.has(a, "backpressure")
    assert book.resume([a], "rate") == [a]
    assert book.resume([a], "rate") == []
    book.pause([a], "rate")
    book.forget([a])
    assert not book.has(a, "rate")


MARKS = Watermarks(high=100, low=50)


def test_hold_starts_when_a_worker_is_full_and_every_worker_has_work() -> None:
    h = Hold(MARKS)
    assert not h.decide([99, 20], paused=False, now=0.0)
    assert h.decide([100, 20], paused=False, now=0.0)
    assert h.since == 0.0


def test_hold_lasts_until_the_full_workers_drain_to_the_low_watermark() -> None:
    h = Hold(MARKS)
    assert h.decide([120, 10], paused=False, now=0.0)
    assert h.decide([70, 10], paused=False, now=0.2)  # below high, still above low: hold
    assert not h.decide([50, 10], paused=False, now=0.3)  # drained: take records again
    assert h.since is None


def test_a_worker_running_dry_ends_the_hold_so_its_partitions_get_records() -> None:
    h = Hold(MARKS)
    assert h.decide([120, 10], paused=False, now=0.0)
    assert not h.decide([120, 0], paused=False, now=0.1)
    assert h.since is None


def test_a_hold_past_the_grace_gives_way_to_pausing_until_a_pause_lands() -> None:
    h = Hold(MARKS)
    assert h.decide([120, 60], paused=False, now=0.0)
    late = HOLD_GRACE_S + 0.01
    assert h.expired(late)
    assert not h.decide([120, 60], paused=False, now=late)
    assert not h.decide([120, 60], paused=False, now=late + 0.1)  # no new hold meanwhile
    assert not h.decide([120, 60], paused=True, now=late + 0.2)  # paused: the episode ends
    assert h.since is None
    assert h.decide([120, 60], paused=False, now=late + 5)  # resumed, full again: a new hold


def test_no_hold_while_partitions_are_paused_for_backpressure_or_without_workers() -> None:
    h = Hold(MARKS)
    assert not h.decide([200, 200], paused=True, now=0.0)
    assert not h.decide([], paused=False, now=0.0)


def test_pause_book_tells_whether_any_partition_is_paused_for_a_reason() -> None:
    book = PauseBook()
    assert not book.any_for("backpressure")
    book.pause([("t", 0)], "rate")
    assert not book.any_for("backpressure")
    book.pause([("t", 1)], "backpressure")
    assert book.any_for("backpressure")
    book.resume([("t", 1)], "backpressure")
    assert not book.any_for("backpressure") and book.any_for("rate")
