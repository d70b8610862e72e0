"""The run loop's pure decisions: consumer settings, rebalance mode, start offsets, backoff."""

from __future__ import annotations

import random

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from eos_pipeline.offsets import Claim
from eos_pipeline.pipeline import (
    RunConfig,
    backoff_delay,
    consumer_config,
    is_incremental,
    revoke_timeout_ms,
    start_offset,
)


def run_config(**changes: object) -> RunConfig:
    base: dict[str, object] = {
        "kafka_bootstrap": "broker:9092",
        "database_url": "postgresql://u:p@db/eos",
        "owner": "host:1:abcdef",
    }
    base.update(changes)
    return RunConfig(**base)  # type: ignore[arg-type]


# -- consumer_config ---------------------------------------------------------------------------
def test_consumer_config_defaults() -> None:
    conf = consumer_config(run_config(group_id="g1", assignor="cooperative-sticky"))
    assert conf == {
        "bootstrap.servers": "broker:9092",
        "group.id": "g1",
        "partition.assignment.strategy": "cooperative-sticky",
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "client.id": "eos-pipeline-host:1:abcdef",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
    }


def test_start_policy_becomes_auto_offset_reset() -> None:
    assert consumer_config(run_config(start="latest"))["auto.offset.reset"] == "latest"


def test_kafka_commits_stay_off_and_read_committed_whatever_the_user_passes() -> None:
    conf = consumer_config(
        run_config(
            kafka_config={
                "enable.auto.commit": "true",
                "enable.auto.offset.store": "true",
                "isolation.level": "read_uncommitted",
                "session.timeout.ms": "45000",
            }
        )
    )
    assert conf["enable.auto.commit"] is False
    assert conf["enable.auto.offset.store"] is False
    assert conf["isolation.level"] == "read_committed"
    assert conf["session.timeout.ms"] == "45000"  # other user settings are kept


def test_user_settings_override_the_defaults() -> None:
    conf = consumer_config(run_config(kafka_config={"partition.assignment.strategy": "range"}))
    assert conf["partition.assignment.strategy"] == "range"


def test_consumer_group_protocol_drops_the_assignment_strategy() -> None:
    conf = consumer_config(
        run_config(
            kafka_config={"group.protocol": "consumer", "partition.assignment.strategy": "range"}
        )
    )
    assert "partition.assignment.strategy" not in conf
    assert conf["group.protocol"] == "consumer"
    assert conf["enable.auto.commit"] is False


def test_classic_group_protocol_keeps_the_assignment_strategy() -> None:
    conf = consumer_config(run_config(kafka_config={"group.protocol": "classic"}))
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"


def test_consumer_config_does_not_touch_the_run_config() -> None:
    user = {"enable.auto.commit": "true"}
    consumer_config(run_config(kafka_config=user))
    assert user == {"enable.auto.commit": "true"}


# -- is_incremental ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        ({"partition.assignment.strategy": "cooperative-sticky"}, True),
        ({"partition.assignment.strategy": " cooperative-sticky "}, True),
        ({"partition.assignment.strategy": "range"}, False),
        ({"partition.assignment.strategy": "roundrobin"}, False),
        ({}, False),
        ({"group.protocol": "consumer"}, True),
        ({"group.protocol": "consumer", "partition.assignment.strategy": "range"}, True),
        ({"group.protocol": "classic", "partition.assignment.strategy": "range"}, False),
    ],
)
def test_is_incremental(conf: dict[str, str], expected: bool) -> None:
    assert is_incremental(conf) is expected


def test_is_incremental_of_the_built_configs() -> None:
    assert is_incremental(consumer_config(run_config()))
    assert not is_incremental(consumer_config(run_config(assignor="range")))
    kip848 = consumer_config(
        run_config(assignor="range", kafka_config={"group.protocol": "consumer"})
    )
    assert is_incremental(kip848)


# -- start_offset ------------------------------------------------------------------------------
def claim(next_offset: int | None) -> Claim:
    return Claim("orders", 0, 1, next_offset, "me")


@pytest.mark.parametrize("policy", ["earliest", "latest"])
def test_stored_offset_wins_over_the_policy(policy: str) -> None:
    assert start_offset(claim(42), policy) == 42  # type: ignore[arg-type]
    assert start_offset(claim(0), policy) == 0  # type: ignore[arg-type]


def test_without_a_stored_offset_the_policy_decides() -> None:
    assert start_offset(claim(None), "earliest") == OFFSET_BEGINNING
    assert start_offset(claim(None), "latest") == OFFSET_END
    assert OFFSET_BEGINNING != OFFSET_END


# -- backoff_delay -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(-3, 0.5), (0, 0.5), (1, 1.0), (2, 2.0), (4, 8.0), (5, 10.0)]
)
def test_backoff_bounds(monkeypatch: pytest.MonkeyPatch, attempt: int, ceiling: float) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.0)
    assert backoff_delay(attempt) == pytest.approx(ceiling / 2)
    monkeypatch.setattr(random, "random", lambda: 1.0)
    assert backoff_delay(attempt) == pytest.approx(ceiling)


def test_backoff_stays_within_bounds_with_real_jitter() -> None:
    for attempt in range(12):
        ceiling = min(10.0, 0.5 * 2**attempt)
        for _ in range(20):
            assert ceiling / 2 <= backoff_delay(attempt) <= ceiling


def test_backoff_custom_base_and_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "random", lambda: 1.0)
    assert backoff_delay(3, base=0.1, cap=60.0) == pytest.approx(0.8)
    assert backoff_delay(20, base=0.1, cap=60.0) == pytest.approx(60.0)


@pytest.mark.parametrize("attempt", [1023, 1100, 10**6])
def test_backoff_after_very_many_attempts_stays_capped(attempt: int) -> None:
    # A long outage keeps the attempt counter growing; the delay must not overflow.
    assert 5.0 <= backoff_delay(attempt) <= 10.0


# -- revoke_timeout_ms -------------------------------------------------------------------------
def test_revoke_timeout_is_a_share_of_max_poll_interval() -> None:
    assert revoke_timeout_ms({}, 0.5) == 150000
    assert revoke_timeout_ms({"max.poll.interval.ms": 60000}, 0.25) == 15000
    assert revoke_timeout_ms({"max.poll.interval.ms": "10000"}, 0.5) == 5000


def test_revoke_timeout_is_an_integer() -> None:
    value = revoke_timeout_ms({"max.poll.interval.ms": "1001"}, 0.5)
    assert value == 500
    assert isinstance(value, int)
