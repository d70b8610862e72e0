"""`run` end to end on the real broker and server: crashes, rebalances, zombies, poison,
aborted transactions. Each test ends with an audit: every source offset is in `order_events` or
`dead_letters` exactly once, and `orders` equals a fold of the topic computed independently."""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from eos_pipeline.audit import read_topic
from eos_pipeline.db import conninfo

from .support import (
    PipelineProcess,
    check_exactly_once,
    cli,
    create_ledger,
    produce,
    start_producer,
    wait_caught_up,
)


def _run_until_idle(
    bootstrap: str, database_url: str, topic: str, group: str, *extra: str, idle: float = 3.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli(
            bootstrap,
            database_url,
            "run",
            "--topic",
            topic,
            "--group",
            group,
            "--exit-when-idle",
            str(idle),
            *extra,
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_poison_messages_become_dead_letters(
    kafka_bootstrap: str,
    database_url: str,
    new_topic: Callable[..., str],
    group_id: str,
    db: psycopg.Connection[tuple[object, ...]],
) -> None:
    topic = new_topic(partitions=2)
    ts = "2026-12-04T10:00:00+00:00"
    poison: list[tuple[bytes, bytes | None, str]] = [
        (
            b"o-1",
            b'{"type":"order_created","order_id":"o-1","customer_id":"c","ts":"%s"}' % ts.encode(),
            "",
        ),
        (b"o-1", b"\xff\xfe\x00garbage", "DecodeError"),
        (b"o-1", b'{"type": "order_paid", ', "InvalidJson"),
        (b"o-1", None, "DecodeError"),
        (
            b"o-1",
            b'{"type":"order_paid","order_id":"o-1","ts":"%s"}' % ts.encode(),
            "ValidationError",
        ),
        (
            b"o-1",
            b'{"type":"item_added","order_id":"o-1","sku":"s","quantity":0,'
            b'"unit_price":"1.00","ts":"%s"}' % ts.encode(),
            "ValidationError",
        ),
        (
            b"o-1",
            b'{"type":"order_paid","order_id":"o-1","amount":"12.x","ts":"%s"}' % ts.encode(),
            "ValidationError",
        ),
        (b"o-1", b'{"type":"order_shipped","order_id":"o-1","ts":"yesterday"}', "ValidationError"),
        (
            b"o-1",
            b'{"type":"order_teleported","order_id":"o-1","ts":"%s"}' % ts.encode(),
            "ValidationError",
        ),
        (
            b"o-2",
            b'{"type":"order_paid","order_id":"o-2","amount":"1.00","ts":"%s"}' % ts.encode(),
            "UnknownOrder",
        ),
        (
            b"o-1",
            b'{"type":"order_paid","order_id":"o-1","amount":"5.00","ts":"%s"}' % ts.encode(),
            "",
        ),
    ]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for key, value, _ in poison:
        producer.produce(topic, key=key, value=value, partition=0)
    producer.flush(10)
    produce(kafka_bootstrap, topic, 400, seed=7, poison_rate=0.1)

    done = _run_until_idle(kafka_bootstrap, database_url, topic, group_id)
    assert done.returncode == 0, done.stderr[-3000:]

    report = check_exactly_once(kafka_bootstrap, database_url, topic, group_id)
    assert report.dead_letters > len([p for p in poison if p[2]])
    rows = db.execute(
        "SELECT src_offset, error_class, error_message FROM dead_letters "
        "WHERE src_partition = 0 AND src_offset < %s ORDER BY src_offset",
        (len(poison),),
    ).fetchall()
    expected = [(i, cls) for i, (_, _, cls) in enumerate(poison) if cls]
    assert [(off, cls) for off, cls, _ in rows] == expected
    assert all(msg for _, _, msg in rows)
    paid = db.execute("SELECT status, paid_amount FROM orders WHERE order_id = 'o-1'").fetchone()
    assert paid is not None and paid[0] == "paid" and str(paid[1]) == "5.00"


def test_aborted_transactions_never_appear(
    kafka_bootstrap: str,
    database_url: str,
    new_topic: Callable[..., str],
    group_id: str,
    db: psycopg.Connection[tuple[object, ...]],
) -> None:
    topic = new_topic(partitions=1)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"abort-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    ts = "2026-12-04T10:00:00+00:00"

    def created(oid: str) -> bytes:
        return orjson.dumps(
            {"type": "order_created", "order_id": oid, "customer_id": "c", "ts": ts}
        )

    for batch, commit in (("a", True), ("b", False), ("c", True)):
        producer.begin_transaction()
        for i in range(50):
            producer.produce(topic, key=f"{batch}{i}".encode(), value=created(f"{batch}{i}"))
        producer.flush(10)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)

    done = _run_until_idle(kafka_bootstrap, database_url, topic, group_id)
    assert done.returncode == 0, done.stderr[-3000:]
    check_exactly_once(kafka_bootstrap, database_url, topic, group_id, expect_records=100)
    ids = {r[0] for r in db.execute("SELECT order_id FROM orders").fetchall()}
    assert ids == {f"a{i}" for i in range(50)} | {f"c{i}" for i in range(50)}


def _consumed(done: subprocess.CompletedProcess[str]) -> int:
    line = [x for x in done.stderr.splitlines() if "stopped:" in x][-1]
    return int(line.split("stopped:")[1].split("consumed")[0])


def test_offsets_committed_in_kafka_are_ignored(
    kafka_bootstrap: str,
    database_url: str,
    new_topic: Callable[..., str],
    group_id: str,
) -> None:
    topic = new_topic(partitions=1)
    produce(kafka_bootstrap, topic, 300, seed=3)

    def commit_in_kafka(offset: int) -> None:
        bogus = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group_id})
        bogus.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
        bogus.close()

    commit_in_kafka(250)  # would skip 250 records if it were trusted
    done = _run_until_idle(
        kafka_bootstrap, database_url, topic, group_id, "--mirror-offsets-to-kafka"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _consumed(done) == 300
    check_exactly_once(kafka_bootstrap, database_url, topic, group_id, expect_records=300)

    commit_in_kafka(0)  # would reprocess everything if it were trusted
    again = _run_until_idle(kafka_bootstrap, database_url, topic, group_id, idle=2.0)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _consumed(again) == 0


def test_start_latest_skips_what_was_there(
    kafka_bootstrap: str,
    database_url: str,
    new_topic: Callable[..., str],
    group_id: str,
    db: psycopg.Connection[tuple[object, ...]],
) -> None:
    topic = new_topic(partitions=1)
    produce(kafka_bootstrap, topic, 100, seed=4)
    done = _run_until_idle(
        kafka_bootstrap, database_url, topic, group_id, "--start", "latest", idle=2.0
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert db.execute("SELECT count(*) FROM order_events").fetchone() == (0,)


@pytest.mark.parametrize(
    "extra",
    [(), ("--workers", "4"), ("--workers", "4", "--order", "key")],
    ids=["inline", "workers4", "workers4-key-order"],
)
def test_sigkill_at_random_moments(
    kafka_bootstrap: str,
    database_url: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    extra: tuple[str, ...],
) -> None:
    topic = new_topic(partitions=4)
    rng = random.Random(11)
    pipeline = PipelineProcess(kafka_bootstrap, database_url, topic, group_id, tmp_path, *extra)
    kills = 0
    try:
        for round_ in range(5):
            # Each kill lands while records flow and batches commit.
            feeder = start_producer(
                kafka_bootstrap, topic, 1600, seed=11 + round_, poison_rate=0.02, batch_size=40
            )
            pipeline.start()
            pipeline.wait_for("assigned")
            time.sleep(rng.uniform(0.2, 1.5))
            pipeline.kill()
            kills += 1
            assert feeder.wait(120) == 0
        pipeline.start()
        wait_caught_up(
            database_url,
            group_id,
            read_topic(kafka_bootstrap, topic),
            alive=lambda: pipeline.running,
        )
        assert pipeline.stop() == 0, pipeline.logs()
    finally:
        pipeline.kill()
    assert kills == 5
    order = "key" if "key" in extra else "partition"
    report = check_exactly_once(kafka_bootstrap, database_url, topic, group_id, order=order)
    assert report.records == 8000


@pytest.mark.parametrize(
    ("assignor", "workers", "order"),
    [
        ("cooperative-sticky", "1", "partition"),
        ("range", "1", "partition"),
        ("cooperative-sticky", "4", "partition"),
        ("cooperative-sticky", "4", "key"),
    ],
)
def test_rebalances_with_three_processes(
    kafka_bootstrap: str,
    database_url: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    assignor: str,
    workers: str,
    order: str,
) -> None:
    topic = new_topic(partitions=6)
    feeder = start_producer(kafka_bootstrap, topic, 9000, seed=21, poison_rate=0.01)
    procs = [
        PipelineProcess(
            kafka_bootstrap,
            database_url,
            topic,
            group_id,
            tmp_path,
            "--assignor",
            assignor,
            "--workers",
            workers,
            "--order",
            order,
            name=f"p{i}",
        )
        for i in range(3)
    ]
    try:
        procs[0].start()
        time.sleep(2)
        procs[1].start()
        time.sleep(2)
        procs[2].start()
        time.sleep(3)
        assert procs[0].stop() == 0, procs[0].logs()  # graceful: commits, leaves
        time.sleep(2)
        procs[1].kill()
        procs[0].start()
        time.sleep(3)
        assert procs[2].stop() == 0, procs[2].logs()
        procs[1].start()
        assert feeder.wait(120) == 0
        wait_caught_up(
            database_url,
            group_id,
            read_topic(kafka_bootstrap, topic),
            alive=lambda: any(p.running for p in procs),
        )
        for p in procs:
            if p.running:
                assert p.stop() == 0, p.logs()
    finally:
        for p in procs:
            p.kill()
        feeder.kill()
    check_exactly_once(kafka_bootstrap, database_url, topic, group_id, order=order)


def test_zombie_commit_is_rejected_by_the_fence(
    kafka_bootstrap: str,
    database_url: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, 2000, seed=31)
    marker = tmp_path / "stalled"
    zombie_env = {
        **os.environ,
        "EOS_TEST_STALL_FILE": str(marker),
        "EOS_TEST_STALL_SECONDS": "12",
    }
    zombie = PipelineProcess(
        kafka_bootstrap,
        database_url,
        topic,
        group_id,
        tmp_path,
        "--handler",
        "tests.integration.ledger:stalling",
        "--kafka-config",
        "max.poll.interval.ms=4000",
        name="zombie",
    )
    healthy = PipelineProcess(
        kafka_bootstrap, database_url, topic, group_id, tmp_path, name="healthy"
    )
    try:
        zombie.start(zombie_env)
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, zombie.logs()
            time.sleep(0.1)
        healthy.start()
        records = read_topic(kafka_bootstrap, topic)
        wait_caught_up(database_url, group_id, records, alive=lambda: healthy.running)
        # The zombie wakes up (12 s stall) and tries to commit its stalled batch.
        deadline = time.monotonic() + 30
        while "fenced" not in zombie.logs():
            assert time.monotonic() < deadline, zombie.logs()
            time.sleep(0.3)
        time.sleep(2)
        assert zombie.stop() == 0, zombie.logs()
        assert healthy.stop() == 0, healthy.logs()
    finally:
        zombie.kill()
        healthy.kill()
    assert "fenced" in zombie.logs()
    check_exactly_once(kafka_bootstrap, database_url, topic, group_id, expect_records=2000)


def test_handler_failures_are_isolated_by_bisection(
    kafka_bootstrap: str,
    database_url: str,
    new_topic: Callable[..., str],
    group_id: str,
    db: psycopg.Connection[tuple[object, ...]],
) -> None:
    topic = new_topic(partitions=1)
    create_ledger(database_url)
    produce(kafka_bootstrap, topic, 600, seed=41)
    done = _run_until_idle(
        kafka_bootstrap,
        database_url,
        topic,
        group_id,
        "--handler",
        "tests.integration.ledger:exploding",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    failed = db.execute(
        "SELECT count(*) FROM dead_letters WHERE error_class = 'HandlerError' "
        "AND error_message LIKE 'RuntimeError: cannot handle %%'"
    ).fetchone()
    created_7 = db.execute(
        "SELECT count(*) FROM order_events WHERE type = 'order_created' AND order_id LIKE '%%7'"
    ).fetchone()
    assert failed is not None and isinstance(failed[0], int) and failed[0] > 0
    assert created_7 == (0,)
    with psycopg.connect(conninfo(database_url)) as conn:
        total = conn.execute(
            "SELECT (SELECT count(*) FROM order_events) + (SELECT count(*) FROM dead_letters)"
        ).fetchone()
    assert total == (600,)


def test_a_consumer_joining_a_busy_group_waits_for_its_partitions_before_idling(
    kafka_bootstrap: str,
    database_url: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
) -> None:
    """A consumer joining a cooperative group is first given nothing, its partitions a round
    later: `--exit-when-idle` must not count that gap as idleness."""
    topic = new_topic(partitions=4)
    produce(kafka_bootstrap, topic, 20000, seed=33)
    slow = {**os.environ, "EOS_TEST_SLOW_MS": "100"}  # 2,000 records/s: busy for 10 s
    busy = PipelineProcess(
        kafka_bootstrap, database_url, topic, group_id, tmp_path, "--handler",
        "tests.integration.ledger:slow", name="busy",
    )  # fmt: skip
    joiner = PipelineProcess(
        kafka_bootstrap, database_url, topic, group_id, tmp_path, "--handler",
        "tests.integration.ledger:slow", "--exit-when-idle", "1", name="joiner",
    )  # fmt: skip
    try:
        busy.start(slow).wait_for("assigned")
        joiner.start(slow)
        assert joiner.proc is not None
        assert joiner.proc.wait(120) == 0, joiner.logs()
        consumed = re.search(r"stopped: (\d+) consumed", joiner.current_log())
        assert "assigned" in joiner.current_log(), joiner.logs()
        assert consumed is not None and int(consumed.group(1)) > 0, joiner.logs()
        wait_caught_up(
            database_url, group_id, read_topic(kafka_bootstrap, topic), alive=lambda: busy.running
        )
        assert busy.stop() == 0, busy.logs()
    finally:
        busy.kill()
        joiner.kill()
    check_exactly_once(kafka_bootstrap, database_url, topic, group_id, expect_records=20000)
