"""Replay planning without a broker: parsing, target offsets, watermark checks, the plan table
and the recompute fold; status lag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from eos_pipeline.errors import ConfigError
from eos_pipeline.offsets import REPLAY_OWNER_PREFIX, Claim, OffsetRow, Outcome, fence_outcome
from eos_pipeline.replay import (
    OffsetOutOfRange,
    PartitionPlan,
    Target,
    UnknownPartition,
    Watermarks,
    build_plan,
    duration_target,
    parse_duration,
    parse_partitions,
    parse_timestamp,
    plan_rows,
    recompute_orders,
    replay_owner,
    select_partitions,
    target_offset,
)
from eos_pipeline.status import (
    EXACT_LAG_MAX,
    PartitionStatus,
    lag_of,
    over_lag,
    ranges_to_count,
    records_lag,
)

MARKS = Watermarks(10, 100)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "1x", "h", "30m1h", "1h1h", "0s", "1.5h", "1h 30m", "-1h"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_parse_timestamp() -> None:
    assert parse_timestamp("1970-01-01T00:00:01Z") == 1000
    assert parse_timestamp("2026-03-01T12:00:00+02:00") == int(
        datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp() * 1000
    )
    with pytest.raises(ConfigError, match="time zone"):
        parse_timestamp("2026-03-01T12:00:00")
    with pytest.raises(ConfigError, match="ISO-8601"):
        parse_timestamp("yesterday")


def test_duration_target_is_now_minus_duration() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    target = duration_target(timedelta(hours=1, minutes=30), now)
    assert target == Target(
        "timestamp", int(datetime(2026, 3, 1, 10, 30, tzinfo=UTC).timestamp() * 1000)
    )


def test_parse_and_select_partitions() -> None:
    assert parse_partitions("2,0,2") == (0, 2)
    for bad in ("", "a", "-1", "1,,x"):
        with pytest.raises(ConfigError):
            parse_partitions(bad)
    assert select_partitions("t", 3, None) == (0, 1, 2)
    assert select_partitions("t", 3, (1,)) == (1,)
    with pytest.raises(UnknownPartition, match="no partition 3, 7"):
        select_partitions("t", 3, (0, 3, 7))


@pytest.mark.parametrize(
    ("target", "by_time", "expected"),
    [
        (Target("earliest"), None, 10),
        (Target("latest"), None, 100),
        (Target("offset", 42), None, 42),
        (Target("timestamp", 5), 57, 57),
        (Target("timestamp", 5), -1, 100),  # no record that late: the end
        (Target("timestamp", 5), None, 100),
    ],
)
def test_target_offset(target: Target, by_time: int | None, expected: int) -> None:
    assert target_offset(target, MARKS, by_time) == expected


def test_build_plan_counts_what_is_reprocessed_and_skipped() -> None:
    plans = build_plan(
        "t",
        (0, 1, 2),
        {0: 80, 1: 30, 2: None},
        {0: MARKS, 1: MARKS, 2: MARKS},
        Target("offset", 50),
    )
    assert [(p.reprocess, p.skip) for p in plans] == [(30, 0), (0, 20), (0, 40)]
    assert plan_rows(plans) == [
        ("t[0]", 80, 50, 30, 0),
        ("t[1]", 30, 50, 0, 20),
        ("t[2]", "-", 50, 0, 40),
    ]


@pytest.mark.parametrize("offset", [9, 101, -1])
def test_build_plan_refuses_offsets_outside_the_watermarks(offset: int) -> None:
    with pytest.raises(OffsetOutOfRange, match=r"t\[0\].*10\.\.100"):
        build_plan("t", (0,), {0: 50}, {0: MARKS}, Target("offset", offset))


def test_both_watermarks_are_valid_targets() -> None:
    for offset in (10, 100):
        (plan,) = build_plan("t", (0,), {}, {0: MARKS}, Target("offset", offset))
        assert plan == PartitionPlan("t", 0, None, offset, MARKS)


def test_a_replay_owner_makes_a_fenced_consumer_reclaim() -> None:
    owner = replay_owner()
    assert owner.startswith(REPLAY_OWNER_PREFIX)
    claim = Claim("t", 0, 3, 80, "host:1:abc")
    assert fence_outcome(claim, OffsetRow(4, 50, owner)) is Outcome.RECLAIM
    assert fence_outcome(claim, OffsetRow(4, 50, "host:2:def")) is Outcome.LOST


def _event(kind: str, oid: str, **fields: object) -> bytes:
    return orjson.dumps(
        {"type": kind, "order_id": oid, "ts": "2026-01-01T00:00:00+00:00", **fields}
    )


def test_recompute_orders_folds_what_remains() -> None:
    created = _event("order_created", "o1", customer_id="c1")
    item = _event("item_added", "o1", sku="s", quantity=2, unit_price="1.50")
    paid = _event("order_paid", "o1", amount="3.00")
    states = recompute_orders(
        ["o1", "o2"],
        [("o1", "t", 1, 5, created), ("o1", "t", 1, 9, item), ("o1", "t", 1, 12, paid)],
    )
    o1 = states["o1"]
    assert o1 is not None
    assert (o1.status, o1.item_count, o1.total_amount, o1.paid_amount, o1.last_offset) == (
        "paid",
        2,
        Decimal("3.00"),
        Decimal("3.00"),
        12,
    )
    assert states["o2"] is None  # nothing of it remains: the replay deletes it


def test_recompute_orders_ignores_events_before_creation() -> None:
    paid = _event("order_paid", "o1", amount="3.00")
    assert recompute_orders(["o1"], [("o1", "t", 0, 1, paid)]) == {"o1": None}


def _status(lag: int | None) -> PartitionStatus:
    return PartitionStatus("g", "t", 0, 5, 10, lag, None, 1, datetime(2026, 1, 1, tzinfo=UTC))


def test_lag() -> None:
    assert lag_of(40, MARKS) == 60
    assert lag_of(None, MARKS) == 90  # no commit yet: everything from the low watermark
    assert lag_of(120, MARKS) == 0
    assert lag_of(40, None) is None
    assert over_lag([_status(3), _status(4), _status(None)], 3) == [_status(4)]


def test_small_lags_are_read_from_the_lowest_next_offset_to_the_high_watermark() -> None:
    marks = {("t", 0): MARKS, ("t", 1): MARKS, ("t", 2): MARKS, ("u", 0): Watermarks(0, 5000)}
    wanted = [
        ("t", 0, 95),  # 5 offsets behind
        ("t", 0, 98),  # another group on the same partition
        ("t", 1, 100),  # caught up: nothing to read
        ("t", 2, None),  # no commit yet: 90 from the low watermark
        ("u", 0, 5000 - EXACT_LAG_MAX - 1),  # too far behind to read
        ("v", 0, 3),  # no such partition on the broker
    ]
    assert ranges_to_count(wanted, marks) == {"t": {0: (95, 100), 2: (10, 100)}}


def test_records_lag_counts_what_a_consumer_receives() -> None:
    # Offsets 95..99: records at 95, 96 and 98; 97 an aborted record, 99 a commit marker.
    delivered = [95, 96, 98]
    assert records_lag(95, MARKS, delivered) == 3
    assert records_lag(97, MARKS, delivered) == 1
    assert records_lag(99, MARKS, delivered) == 0  # only the marker is left: caught up
    assert records_lag(99, MARKS, None) == 1  # not read: the offset lag
    assert records_lag(99, None, delivered) is None
