"""The Kafka-to-Kafka stage (`run --sink kafka`) against the real broker: each input record
reaches the output topic exactly once, also through SIGKILLs and rebalances."""

from __future__ import annotations

import select
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence

import orjson

from eos_pipeline.orders.generate import generate_orders
from eos_pipeline.stage import enrich_orders

from .kafka_io import Record, produce_committed, read_committed, run_cli, start_cli

FAST_GROUP = [
    "--kafka-config",
    "session.timeout.ms=6000",
    "--kafka-config",
    "heartbeat.interval.ms=1000",
]


def stage_args(source: str, output: str, group: str, *extra: str) -> list[str]:
    return [
        "run",
        "--sink",
        "kafka",
        "--topic",
        source,
        "--group",
        group,
        "--output-topic",
        output,
        *extra,
    ]


def expected_output(records: Sequence[Record]) -> Counter[Record]:
    return Counter(out for key, value in records for out in enrich_orders(key, value))  # type: ignore[misc]


def fed_topics(
    bootstrap: str, new_topic: Callable[..., str], partitions: int, count: int, seed: int
) -> tuple[str, str, list[Record]]:
    """A source topic holding `count` orders events (some poison) and an empty output topic."""
    source, output = new_topic(partitions=partitions), new_topic(partitions=2)
    records: list[Record] = list(generate_orders(count, seed=seed, poison_rate=0.03))
    produce_committed(bootstrap, source, records, batch=1000)
    return source, output, records


def test_stage_enriches_every_record_once(
    kafka_bootstrap: str, new_topic: Callable[..., str], group_id: str
) -> None:
    source, output, records = fed_topics(kafka_bootstrap, new_topic, 3, 1500, seed=11)

    done = run_cli(
        kafka_bootstrap,
        stage_args(source, output, group_id, "--exit-when-idle", "2", "--batch-size", "200"),
    )
    assert done.returncode == 0, done.stderr
    seen = read_committed(kafka_bootstrap, output, expect=len(records))
    assert Counter(seen) == expected_output(records)
    items = [orjson.loads(v or b"") for k, v in seen if v and b'"item_added"' in v]
    assert any("line_total" in item for item in items)


def test_missing_output_topic_is_one_readable_line(
    kafka_bootstrap: str, new_topic: Callable[..., str], group_id: str
) -> None:
    done = run_cli(kafka_bootstrap, stage_args(new_topic(), "no-such-topic-x", group_id))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("eos-pipeline: error: topic(s) not found on ")
    assert "no-such-topic-x" in lines[0] and "topics create" in lines[0]


def wait_for_commit(proc: subprocess.Popen[str], timeout: float = 30.0) -> bool:
    """True once the stage logs a committed batch, i.e. it is working with a transaction
    open or about to open; False when `timeout` passes first."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready and "committed" in proc.stderr.readline():
            return True
    return False


def test_stage_is_exactly_once_through_sigkills_and_a_rebalance(
    kafka_bootstrap: str, new_topic: Callable[..., str], group_id: str
) -> None:
    source, output, records = fed_topics(kafka_bootstrap, new_topic, 4, 4000, seed=5)
    args = [
        "--log-level",
        "DEBUG",
        *stage_args(
            source,
            output,
            group_id,
            "--handler",
            "tests.integration.stage_handlers:slow_enrich",
            "--batch-size",
            "100",
            "--batch-timeout-ms",
            "500",
            "--exit-when-idle",
            "10",
            *FAST_GROUP,
        ),
    ]

    def start(instance: str) -> subprocess.Popen[str]:
        return start_cli(
            kafka_bootstrap,
            [*args, "--transactional-id", f"stage-{instance}-{group_id}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    procs = {"a": start("a"), "b": start("b")}
    kills = 0
    # Kill an instance in the middle of its work (it just committed one batch and is filling
    # the next), restart it with the same transactional.id: each kill is a rebalance with a
    # transaction in flight, and two instances share the group throughout.
    for victim in ["a", "b", "a", "b"]:
        assert wait_for_commit(procs[victim]), f"{victim} never got to work"
        time.sleep(0.2)
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        procs[victim].stderr.close()  # type: ignore[union-attr]
        kills += 1
        procs[victim] = start(victim)

    for proc in procs.values():
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    seen = read_committed(kafka_bootstrap, output, expect=len(records))
    assert kills == 4
    assert len(seen) == len(records)
    assert Counter(seen) == expected_output(records)
