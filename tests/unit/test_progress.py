"""`--order key`: a partition's stored offset only moves to where everything below is done."""

from __future__ import annotations

from eos_pipeline.progress import PartitionProgress


def test_watermark_waits_for_the_lowest_pending_offset() -> None:
    p = PartitionProgress(next_offset=10)
    for offset in (10, 11, 13, 14):  # 12 is a transaction marker: never dispatched
        p.dispatched(offset)
    p.completed([11, 13])
    assert p.watermark() == 10  # 10 still pending
    p.completed([10])
    assert p.watermark() == 14  # 10, 11, 13 done; 14 pending
    p.completed([14])
    assert p.watermark() == 15


def test_nothing_dispatched_keeps_the_stored_offset() -> None:
    assert PartitionProgress(next_offset=None).watermark() is None
    assert PartitionProgress(next_offset=7).watermark() == 7


def test_offsets_done_before_a_restart_are_recognised_and_passed() -> None:
    p = PartitionProgress(next_offset=5, done=[6, 8])
    assert p.is_done(6) and p.is_done(8) and not p.is_done(5) and not p.is_done(7)
    for offset in (5, 6, 7, 8):
        p.dispatched(offset)
    assert p.watermark() == 5
    p.completed([5])
    assert p.watermark() == 7
    p.completed([7])
    assert p.watermark() == 9


def test_done_set_forgets_what_the_watermark_passed() -> None:
    p = PartitionProgress(next_offset=0)
    for offset in range(4):
        p.dispatched(offset)
    p.completed(range(4))
    assert p.watermark() == 4
    p.advanced(4)
    assert not p.is_done(2)


def test_latency_sample_is_evenly_spread_and_keeps_the_ends() -> None:
    from eos_pipeline.metrics import sample

    assert sample([1, 2, 3], 64) == [1, 2, 3]
    picked = sample(list(range(1000)), 5)
    assert picked == [0, 250, 500, 749, 999]
