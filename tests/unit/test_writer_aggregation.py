"""Pre-aggregation per key before a set-based write: last row wins, or values are summed."""

from __future__ import annotations

from decimal import Decimal

from eos_pipeline.writer import last_per_key, sum_per_key


def test_last_per_key_keeps_the_last_row_in_first_seen_key_order() -> None:
    rows = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)]
    assert last_per_key(rows, [0]) == [("a", 3), ("b", 5), ("c", 4)]


def test_last_per_key_with_a_composite_key() -> None:
    rows = [("t", 0, "x"), ("t", 1, "y"), ("t", 0, "z"), ("u", 0, "w")]
    assert last_per_key(rows, [0, 1]) == [("t", 0, "z"), ("t", 1, "y"), ("u", 0, "w")]


def test_last_per_key_key_need_not_be_the_first_column() -> None:
    rows = [(1, "k1"), (2, "k2"), (3, "k1")]
    assert last_per_key(rows, [1]) == [(3, "k1"), (2, "k2")]


def test_last_per_key_distinct_keys_pass_through_and_none_is_a_key() -> None:
    rows = [(None, 1), ("a", 2), (None, 3)]
    assert last_per_key(rows, [0]) == [(None, 3), ("a", 2)]
    assert last_per_key([], [0]) == []


def test_last_per_key_accepts_a_generator_and_list_rows() -> None:
    assert last_per_key((r for r in [["a", 1], ["a", 2]]), [0]) == [["a", 2]]


def test_sum_per_key_adds_the_value_columns() -> None:
    rows = [("paid", 1), ("created", 1), ("paid", 1), ("created", -1), ("shipped", 2)]
    assert sum_per_key(rows, [0]) == [("paid", 2), ("shipped", 2)]


def test_sum_per_key_drops_only_all_zero_rows() -> None:
    rows = [("a", 1, 5), ("a", -1, 0), ("b", 1, -1), ("b", -1, 1)]
    # a sums to (0, 5): kept; b sums to (0, 0): dropped
    assert sum_per_key(rows, [0]) == [("a", 0, 5)]


def test_sum_per_key_with_a_composite_key_and_decimals() -> None:
    rows = [
        ("c1", "2024-05-01", Decimal("1.10"), 1),
        ("c1", "2024-05-02", Decimal("2.00"), 1),
        ("c1", "2024-05-01", Decimal("0.15"), 1),
    ]
    assert sum_per_key(rows, [0, 1]) == [
        ("c1", "2024-05-01", Decimal("1.25"), 2),
        ("c1", "2024-05-02", Decimal("2.00"), 1),
    ]


def test_sum_per_key_key_in_the_middle_is_not_summed() -> None:
    rows = [(1, "k", 10), (2, "k", 20)]
    assert sum_per_key(rows, [1]) == [(3, "k", 30)]


def test_sum_per_key_does_not_mutate_its_input() -> None:
    first = ["a", 1]
    rows = [first, ["a", 2]]
    assert sum_per_key(rows, [0]) == [("a", 3)]
    assert first == ["a", 1]


def test_sum_per_key_of_nothing() -> None:
    assert sum_per_key([], [0]) == []
