"""`replay` end to end on the real broker and server: a replay with --rebuild reproduces every
table and view exactly, also live under a running pipeline (fenced, re-claimed); without
--rebuild it changes nothing; --dry-run and refused replays touch nothing; timestamps resolve
to the right offsets."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer

from eos_pipeline.audit import Record, read_topic
from eos_pipeline.offsets import REPLAY_OWNER_PREFIX

from .support import PipelineProcess, check_exactly_once, cli, produce, wait_caught_up

Db = psycopg.Connection[tuple[object, ...]]
ORDERS_HANDLER = "eos_pipeline.orders.handler:handle_orders"
# Every table and view a replay could disturb, in a comparable order.
SNAPSHOT_QUERIES = {
    "orders": "SELECT * FROM orders ORDER BY order_id",
    "order_status_counts": "SELECT * FROM order_status_counts WHERE orders <> 0 ORDER BY status",
    "customer_order_totals": "SELECT * FROM customer_order_totals ORDER BY customer_id",
    "revenue_by_hour": "SELECT * FROM revenue_by_hour ORDER BY hour",
    "dead_letters": "SELECT src_topic, src_partition, src_offset, error_class FROM dead_letters"
    " ORDER BY 1, 2, 3",
    "order_events": "SELECT * FROM order_events ORDER BY src_topic, src_partition, src_offset",
}


def run_cli(bootstrap: str, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli(bootstrap, database_url, *args),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def snapshot(bootstrap: str, database_url: str, db: Db) -> dict[str, list[tuple[Any, ...]]]:
    """The materialized views refreshed by hand, then every table and view."""
    done = run_cli(bootstrap, database_url, "views", "refresh")
    assert done.returncode == 0, done.stderr
    return {name: db.execute(query).fetchall() for name, query in SNAPSHOT_QUERIES.items()}


def offsets_rows(db: Db, group: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT topic, partition, next_offset, epoch, owner, updated_at FROM eos_offsets"
        " WHERE consumer_group = %s ORDER BY topic, partition",
        (group,),
    ).fetchall()


class Setup:
    """A 3-partition topic with orders events (some poison) and a pipeline for the group."""

    def __init__(
        self, bootstrap: str, database_url: str, topic: str, group: str, log_dir: Path, db: Db
    ) -> None:
        self.bootstrap, self.database_url, self.topic, self.group = (
            bootstrap,
            database_url,
            topic,
            group,
        )
        self.pipeline = PipelineProcess(
            bootstrap, database_url, topic, group, log_dir, "--handler", ORDERS_HANDLER
        )
        # The orders tables are what a replay rebuilds; a test ledger would count replays.
        db.execute("DROP TABLE IF EXISTS eos_test_ledger")

    def produce(self, n: int, seed: int) -> list[Record]:
        produce(self.bootstrap, self.topic, n, seed=seed, poison_rate=0.02)
        return read_topic(self.bootstrap, self.topic)

    def process(self, records: list[Record], keep_running: bool = False) -> None:
        if not self.pipeline.running:
            self.pipeline.start()
        try:
            wait_caught_up(
                self.database_url, self.group, records, alive=lambda: self.pipeline.running
            )
        except AssertionError:
            raise AssertionError(self.pipeline.logs()) from None
        if not keep_running:
            assert self.pipeline.stop() == 0, self.pipeline.logs()

    def replay(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(
            self.bootstrap,
            self.database_url,
            "replay",
            "--group",
            self.group,
            "--topic",
            self.topic,
            *args,
        )


@pytest.fixture
def setup(
    kafka_bootstrap: str,
    database_url: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    db: Db,
) -> Any:
    s = Setup(kafka_bootstrap, database_url, new_topic(partitions=3), group_id, tmp_path, db)
    yield s
    s.pipeline.kill()


def test_replay_to_earliest_with_rebuild_reproduces_every_table_and_view(
    setup: Setup, db: Db
) -> None:
    records = setup.produce(3000, seed=61)
    setup.process(records)
    before = snapshot(setup.bootstrap, setup.database_url, db)
    assert len(before["orders"]) > 100 and before["dead_letters"]

    done = setup.replay("--to-earliest", "--rebuild", "--yes")
    assert done.returncode == 0, done.stderr
    assert "reset 3 partition(s)" in done.stdout and "rebuilt" in done.stdout
    # In the same transaction: every derived row of the replayed range is gone.
    assert db.execute("SELECT count(*) FROM order_events").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM orders").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM order_status_counts WHERE orders <> 0").fetchone() == (
        0,
    )
    assert {r[2] for r in offsets_rows(db, setup.group)} == {0}

    setup.process(records)
    assert snapshot(setup.bootstrap, setup.database_url, db) == before
    check_exactly_once(setup.bootstrap, setup.database_url, setup.topic, setup.group, 3000)


def test_live_replay_of_one_partition_fences_and_reclaims(setup: Setup, db: Db) -> None:
    records = setup.produce(1500, seed=62)
    setup.process(records, keep_running=True)
    middle = [r.offset for r in records if r.partition == 1][300]

    done = setup.replay("--partitions", "1", "--to-offset", str(middle), "--rebuild", "--yes")
    assert done.returncode == 0, done.stderr
    assert "reset 1 partition(s)" in done.stdout
    row = db.execute("SELECT max(src_offset) FROM order_events WHERE src_partition = 1").fetchone()
    assert row is not None and isinstance(row[0], int) and row[0] < middle
    other = db.execute(
        "SELECT count(*) FROM order_events WHERE src_partition <> 1 AND src_offset >= %s",
        (middle,),
    ).fetchone()
    assert other is not None and isinstance(other[0], int) and other[0] > 0  # others kept theirs

    # The running pipeline notices at its next commit for the partition: new records arrive.
    records = setup.produce(1500, seed=63)
    setup.process(records)
    assert setup.pipeline.starts == 1
    assert "reset by a replay; re-claiming" in setup.pipeline.logs()
    check_exactly_once(setup.bootstrap, setup.database_url, setup.topic, setup.group, 3000)
    live = snapshot(setup.bootstrap, setup.database_url, db)

    # The same state as processing everything from scratch.
    done = setup.replay("--to-earliest", "--rebuild", "--yes")
    assert done.returncode == 0, done.stderr
    setup.process(records)
    assert snapshot(setup.bootstrap, setup.database_url, db) == live


def test_replay_without_rebuild_changes_nothing(setup: Setup, db: Db) -> None:
    records = setup.produce(1500, seed=64)
    setup.process(records)
    before = snapshot(setup.bootstrap, setup.database_url, db)
    stored = {(r[0], r[1]): r[2] for r in offsets_rows(db, setup.group)}

    done = setup.replay("--to-earliest", "--yes")
    assert done.returncode == 0, done.stderr
    reset = offsets_rows(db, setup.group)
    assert {(r[2], str(r[4]).startswith(REPLAY_OWNER_PREFIX)) for r in reset} == {(0, True)}
    assert sum(int(n) for n in stored.values()) > 0

    setup.process(records)
    assert snapshot(setup.bootstrap, setup.database_url, db) == before
    assert {(r[0], r[1]): r[2] for r in offsets_rows(db, setup.group)} == stored
    check_exactly_once(setup.bootstrap, setup.database_url, setup.topic, setup.group, 1500)


def test_dry_run_and_refused_replays_change_nothing(setup: Setup, db: Db) -> None:
    records = setup.produce(300, seed=65)
    setup.process(records)
    before = (offsets_rows(db, setup.group), snapshot(setup.bootstrap, setup.database_url, db))
    end = max(r.offset for r in records if r.partition == 0) + 2

    dry = setup.replay("--to-earliest", "--rebuild", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "partition" in dry.stdout and f"{setup.topic}[2]" in dry.stdout
    assert "dry run: nothing changed" in dry.stdout

    refused = {
        "outside": setup.replay("--partitions", "0", "--to-offset", str(end + 10), "--yes"),
        "no partition 7": setup.replay("--partitions", "7", "--to-earliest", "--yes"),
        "no terminal": setup.replay("--to-earliest"),
        "not a duration": setup.replay("--by-duration", "soon", "--yes"),
        "no stored offsets for group": run_cli(
            setup.bootstrap,
            setup.database_url,
            "replay",
            "--group",
            "nobody",
            "--topic",
            setup.topic,
            "--to-earliest",
            "--yes",
        ),
        "not found": run_cli(
            setup.bootstrap,
            setup.database_url,
            "replay",
            "--group",
            setup.group,
            "--topic",
            "no-such-topic",
            "--to-earliest",
            "--yes",
        ),
    }
    for words, done in refused.items():
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (words, done.stderr)
        assert len(lines) == 1 and words in lines[0], (words, done.stderr)
    assert (offsets_rows(db, setup.group), snapshot(setup.bootstrap, setup.database_url, db)) == (
        before
    )


def test_timestamps_and_durations_pick_the_first_record_at_or_after(
    kafka_bootstrap: str,
    database_url: str,
    new_topic: Callable[..., str],
    group_id: str,
    db: Db,
) -> None:
    """Records with known timestamps, 20 per partition one minute apart, ending an hour ago;
    targets fall half a minute after a record, so a few seconds of test time do not matter."""
    topic = new_topic(partitions=3)
    base = datetime.now(UTC) - timedelta(hours=1, minutes=20, seconds=30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for p in range(3):
        for i in range(20):
            at = base + timedelta(minutes=i)
            producer.produce(topic, b"{}", partition=p, timestamp=int(at.timestamp() * 1000))
    producer.flush(10)
    # Partitions 0 and 1 were processed; 2 has no row yet: the replay creates it.
    for p in (0, 1):
        db.execute(
            "INSERT INTO eos_offsets (consumer_group, topic, partition, next_offset, epoch, owner)"
            " VALUES (%s, %s, %s, 20, 3, 'host:1:abc')",
            (group_id, topic, p),
        )

    def replay(*args: str) -> dict[int, tuple[Any, ...]]:
        done = run_cli(
            kafka_bootstrap,
            database_url,
            "replay",
            "--group",
            group_id,
            "--topic",
            topic,
            *args,
            "--yes",
        )
        assert done.returncode == 0, done.stderr
        return {int(r[1]): r[2:5] for r in offsets_rows(db, group_id)}

    halfway = (base + timedelta(minutes=7, seconds=30)).isoformat()
    rows = replay("--to-timestamp", halfway)
    assert {p: r[0] for p, r in rows.items()} == {0: 8, 1: 8, 2: 8}
    assert {p: r[1] for p, r in rows.items()} == {0: 4, 1: 4, 2: 1}
    assert all(str(r[2]).startswith(REPLAY_OWNER_PREFIX) for r in rows.values())

    # 70 minutes back is base + 10 min 30 s (plus the seconds this test took): record 11.
    rows = replay("--partitions", "0,2", "--by-duration", "1h10m")
    assert (rows[0][0], rows[1][0], rows[2][0]) == (11, 8, 11)
    assert replay("--to-timestamp", datetime.now(UTC).isoformat())[0][0] == 20  # none later
