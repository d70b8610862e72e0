"""`status` end to end: lag against the real broker's watermarks, owners, dead letters, view
freshness, as a table and as JSON; --max-lag as a health check; unreachable servers."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import orjson
import psycopg
import pytest
from confluent_kafka import Producer

from .support import cli

Db = psycopg.Connection[tuple[object, ...]]


def status(
    bootstrap: str, database_url: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli(bootstrap, database_url, "status", *args),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def stack(
    kafka_bootstrap: str,
    database_url: str,
    new_topic: Callable[..., str],
    group_id: str,
    db: Db,
) -> tuple[str, str]:
    """Partition 0 caught up, partition 1 50 records behind, two kinds of dead letters, the
    materialized views refreshed once."""
    topic = new_topic(partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for p in (0, 1):
        for _ in range(100):
            producer.produce(topic, b"{}", partition=p)
    producer.flush(10)
    db.execute(
        "INSERT INTO eos_offsets (consumer_group, topic, partition, next_offset, epoch, owner)"
        " VALUES (%(g)s, %(t)s, 0, 100, 2, 'host:1:abc'), (%(g)s, %(t)s, 1, 50, 3, 'host:1:abc')",
        {"g": group_id, "t": topic},
    )
    db.execute(
        "INSERT INTO dead_letters (src_topic, src_partition, src_offset, error_class,"
        " error_message) VALUES (%(t)s, 0, 1, 'DecodeError', 'x'), (%(t)s, 0, 2, 'DecodeError',"
        " 'x'), (%(t)s, 1, 3, 'UnknownOrder', 'x'), ('elsewhere', 0, 1, 'ValidationError', 'x')",
        {"t": topic},
    )
    done = subprocess.run(
        cli(kafka_bootstrap, database_url, "views", "refresh"), capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return topic, group_id


def test_status_as_json(kafka_bootstrap: str, database_url: str, stack: tuple[str, str]) -> None:
    topic, group = stack
    done = status(kafka_bootstrap, database_url, "--group", group, "--format", "json")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    parts = [
        (p["topic"], p["partition"], p["next_offset"], p["high_watermark"], p["lag"], p["epoch"])
        for p in report["partitions"]
    ]
    assert parts == [(topic, 0, 100, 100, 0, 2), (topic, 1, 50, 100, 50, 3)]
    assert all(p["owner"] == "host:1:abc" and p["updated_at"] for p in report["partitions"])
    letters = {(d["topic"], d["error_class"]): d["count"] for d in report["dead_letters"]}
    assert letters == {(topic, "DecodeError"): 2, (topic, "UnknownOrder"): 1}  # its topics only
    views = {v["name"]: v for v in report["views"]}
    assert set(views) == {"customer_order_totals", "revenue_by_hour", "order_status_counts"}
    assert views["revenue_by_hour"]["refreshed_at"] and views["revenue_by_hour"]["duration_ms"]
    assert views["order_status_counts"]["refreshed_at"] is None  # never rebuilt


def test_status_as_table(kafka_bootstrap: str, database_url: str, stack: tuple[str, str]) -> None:
    topic, group = stack
    done = status(kafka_bootstrap, database_url)  # every group
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "group",
        "partition",
        "next_offset",
        "high",
        "lag",
        "owner",
        "epoch",
        "updated_at",
    ]
    row = next(line.split() for line in lines if f"{topic}[1]" in line)
    assert row[:7] == [group, f"{topic}[1]", "50", "100", "50", "host:1:abc", "3"]
    assert any(line.split() == ["elsewhere", "ValidationError", "1"] for line in lines)
    assert any(line.startswith("order_status_counts") and "never" in line for line in lines)


def test_max_lag_is_a_health_check(
    kafka_bootstrap: str, database_url: str, stack: tuple[str, str], db: Db
) -> None:
    topic, group = stack
    behind = status(kafka_bootstrap, database_url, "--group", group, "--max-lag", "49")
    assert behind.returncode == 1, behind.stderr
    assert f"{topic}[1] lags 50 > 49" in behind.stderr
    ok = status(kafka_bootstrap, database_url, "--group", group, "--max-lag", "50")
    assert ok.returncode == 0, ok.stderr
    db.execute("UPDATE eos_offsets SET next_offset = 100 WHERE consumer_group = %s", (group,))
    caught_up = status(kafka_bootstrap, database_url, "--group", group, "--max-lag", "0")
    assert caught_up.returncode == 0, caught_up.stderr


@pytest.mark.parametrize("server", ["kafka", "postgresql"])
def test_unreachable_servers_are_one_line_and_exit_2(
    kafka_bootstrap: str, database_url: str, server: str
) -> None:
    bootstrap, url = kafka_bootstrap, database_url
    if server == "kafka":
        bootstrap = "127.0.0.1:1"
    else:
        url = "postgresql+psycopg://eos:secret@127.0.0.1:1/eos"
    started = time.monotonic()
    done = status(bootstrap, url, timeout=30)
    assert time.monotonic() - started < 15
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eos-pipeline: error: cannot"), done.stderr
    assert "secret" not in done.stderr


def test_lag_counts_records_not_transaction_markers(
    kafka_bootstrap: str, database_url: str, new_topic: Callable[..., str], group_id: str, db: Db
) -> None:
    """A committed transaction of 3 records (offsets 0-2, marker 3), an aborted one of 2
    (4-5, marker 6), a committed one of 2 (7-8, marker 9): high watermark 10."""
    topic = new_topic(partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": group_id})
    producer.init_transactions(30)
    for count, commit in ((3, True), (2, False), (2, True)):
        producer.begin_transaction()
        for _ in range(count):
            producer.produce(topic, b"{}", partition=0)
        producer.flush(10)  # written before the abort, so the aborted records take offsets
        (producer.commit_transaction if commit else producer.abort_transaction)(30)
    groups = {"at-marker": 9, "before-aborted": 4, "mid": 1, "none": None}
    for name, offset in groups.items():
        db.execute(
            "INSERT INTO eos_offsets (consumer_group, topic, partition, next_offset, epoch)"
            " VALUES (%s, %s, 0, %s, 1)",
            (f"{group_id}-{name}", topic, offset),
        )
    done = status(kafka_bootstrap, database_url, "--format", "json")
    assert done.returncode == 0, done.stderr
    lags = {
        p["group"].removeprefix(f"{group_id}-"): (p["high_watermark"], p["lag"])
        for p in orjson.loads(done.stdout)["partitions"]
        if p["topic"] == topic
    }
    assert lags == {
        "at-marker": (10, 0),  # caught up: only the commit marker is left
        "before-aborted": (10, 2),  # the aborted records and the markers are never received
        "mid": (10, 4),
        "none": (10, 5),
    }
