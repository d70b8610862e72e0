"""Batch policy and buffer: when a batch falls due, what it holds, what is dropped."""

from __future__ import annotations

import pytest

from eos_pipeline.batching import BatchBuffer, BatchPolicy, Item, next_offsets, without
from eos_pipeline.events import DeadLetter, Event


def event(topic: str = "t", partition: int = 0, offset: int = 0) -> Event:
    return Event(topic, partition, offset, None, {"n": offset}, b"{}", 0)


def letter(topic: str = "t", partition: int = 0, offset: int = 0) -> DeadLetter:
    return DeadLetter(topic, partition, offset, None, b"x", (), "DecodeError", "bad")


# -- policy -----------------------------------------------------------------------------------
def test_policy_defaults() -> None:
    policy = BatchPolicy()
    assert policy.max_messages == 5000
    assert policy.max_wait_s == 0.1


@pytest.mark.parametrize("size", [0, -1])
def test_policy_rejects_batch_size_below_one(size: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BatchPolicy(max_messages=size)


def test_policy_rejects_negative_timeout() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        BatchPolicy(max_wait_s=-0.001)


def test_policy_accepts_the_boundaries() -> None:
    policy = BatchPolicy(max_messages=1, max_wait_s=0.0)
    assert (policy.max_messages, policy.max_wait_s) == (1, 0.0)


# -- buffer: add / room ------------------------------------------------------------------------
def test_add_keeps_consumption_order_and_start_time_of_first_record() -> None:
    buf = BatchBuffer(BatchPolicy(max_messages=10, max_wait_s=1.0))
    a, b, c = event(offset=1), letter(offset=2), event(partition=1, offset=0)
    buf.add([a, b], now=5.0)
    buf.add([c], now=7.0)
    assert buf.items == [a, b, c]
    assert buf.started_at == 5.0


def test_add_of_nothing_does_not_start_the_clock() -> None:
    buf = BatchBuffer(BatchPolicy())
    buf.add([], now=3.0)
    assert buf.started_at is None
    assert buf.items == []
    buf.add(iter([event()]), now=4.0)  # a generator works too
    assert buf.started_at == 4.0


def test_room_counts_down_and_never_goes_negative() -> None:
    buf = BatchBuffer(BatchPolicy(max_messages=3))
    assert buf.room() == 3
    buf.add([event(offset=0), event(offset=1)], now=0.0)
    assert buf.room() == 1
    buf.add([event(offset=i) for i in range(2, 6)], now=0.0)
    assert len(buf.items) == 6
    assert buf.room() == 0


# -- buffer: is_due / time_left ----------------------------------------------------------------
def test_empty_buffer_is_never_due() -> None:
    buf = BatchBuffer(BatchPolicy(max_messages=1, max_wait_s=0.0))
    assert not buf.is_due(now=1e9)


def test_due_when_full() -> None:
    buf = BatchBuffer(BatchPolicy(max_messages=2, max_wait_s=100.0))
    buf.add([event(offset=0)], now=0.0)
    assert not buf.is_due(now=0.0)
    buf.add([event(offset=1)], now=0.0)
    assert buf.is_due(now=0.0)


def test_due_when_the_wait_has_passed() -> None:
    buf = BatchBuffer(BatchPolicy(max_messages=100, max_wait_s=0.5))
    buf.add([event()], now=10.0)
    assert not buf.is_due(now=10.49)
    assert buf.is_due(now=10.5)
    assert buf.is_due(now=11.0)


def test_time_left_before_and_after_the_first_record() -> None:
    buf = BatchBuffer(BatchPolicy(max_messages=100, max_wait_s=0.5))
    assert buf.time_left(now=123.0) == 0.5
    buf.add([event()], now=10.0)
    assert buf.time_left(now=10.2) == pytest.approx(0.3)
    assert buf.time_left(now=20.0) == 0.0


# -- buffer: take / drop -----------------------------------------------------------------------
def test_take_returns_everything_and_resets() -> None:
    buf = BatchBuffer(BatchPolicy(max_messages=100, max_wait_s=0.5))
    items: list[Item] = [event(offset=0), letter(offset=1)]
    buf.add(items, now=1.0)
    taken = buf.take()
    assert taken == items
    assert buf.items == []
    assert buf.started_at is None
    assert buf.time_left(now=100.0) == 0.5
    assert buf.take() == []


def test_drop_forgets_only_the_given_partitions() -> None:
    buf = BatchBuffer(BatchPolicy())
    keep: list[Item] = [event("a", 0, 1), letter("b", 0, 5)]
    gone: list[Item] = [event("a", 1, 1), letter("a", 1, 2)]
    buf.add([keep[0], gone[0], keep[1], gone[1]], now=2.0)
    assert buf.drop({("a", 1)}) == 2
    assert buf.items == keep
    assert buf.started_at == 2.0  # records remain, so the batch clock keeps running


def test_drop_of_everything_stops_the_clock() -> None:
    buf = BatchBuffer(BatchPolicy())
    buf.add([event("a", 0, 1), event("a", 0, 2)], now=2.0)
    assert buf.drop([("a", 0)]) == 2
    assert buf.items == []
    assert buf.started_at is None


def test_drop_with_nothing_to_drop() -> None:
    buf = BatchBuffer(BatchPolicy())
    assert buf.drop({("a", 0)}) == 0
    buf.add([event("a", 0, 1)], now=1.0)
    assert buf.drop(set()) == 0
    assert buf.drop({("a", 1), ("b", 0)}) == 0
    assert len(buf.items) == 1
    assert buf.started_at == 1.0


# -- next_offsets / without --------------------------------------------------------------------
def test_next_offsets_is_last_offset_plus_one_per_partition() -> None:
    items: list[Item] = [
        event("a", 0, 10),
        letter("a", 0, 11),
        event("a", 1, 3),
        event("b", 0, 0),
        event("a", 0, 12),
    ]
    assert next_offsets(items) == {("a", 0): 13, ("a", 1): 4, ("b", 0): 1}


def test_next_offsets_takes_the_highest_even_out_of_order() -> None:
    assert next_offsets([event(offset=7), event(offset=3)]) == {("t", 0): 8}


def test_next_offsets_of_nothing() -> None:
    assert next_offsets([]) == {}


def test_without_removes_partitions_and_keeps_order() -> None:
    a0, a1, b0 = event("a", 0, 1), letter("a", 1, 2), event("b", 0, 3)
    assert without([a0, a1, b0], {("a", 1)}) == [a0, b0]
    assert without([a0, a1, b0], []) == [a0, a1, b0]
    assert without([a0, a1, b0], {("a", 0), ("a", 1), ("b", 0)}) == []
