"""Helpers for tests that drive the real broker: reading a topic as read_committed consumers
see it, and running the command line as a separate process (so it can be killed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence

from confluent_kafka import Consumer

from eos_pipeline.producer import TransactionalProducer
from tests.backends import ROOT

Record = tuple[bytes | None, bytes | None]


def read_placed(
    bootstrap: str, topic: str, *, expect: int, timeout: float = 30.0, settle: float = 1.5
) -> list[tuple[int, bytes | None, bytes | None]]:
    """(partition, key, value) of everything visible to read_committed: reads until `expect`
    records arrived, then for `settle` seconds more so duplicates would show; gives up after
    `timeout`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    seen: list[tuple[int, bytes | None, bytes | None]] = []
    deadline = time.monotonic() + timeout
    settled_at: float | None = None
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.2):
                partition = msg.partition()
                if msg.error() is None and partition is not None:
                    seen.append((partition, msg.key(), msg.value()))
            if len(seen) >= expect:
                settled_at = settled_at or time.monotonic()
                if time.monotonic() - settled_at >= settle:
                    break
    finally:
        consumer.close()
    return seen


def read_committed(
    bootstrap: str, topic: str, *, expect: int, timeout: float = 30.0, settle: float = 1.5
) -> list[Record]:
    """(key, value) of everything visible to read_committed, as `read_placed` reads it."""
    placed = read_placed(bootstrap, topic, expect=expect, timeout=timeout, settle=settle)
    return [(key, value) for _, key, value in placed]


def produce_committed(bootstrap: str, topic: str, records: Iterable[Record], batch: int) -> int:
    """Write records in transactions of `batch` records; returns how many."""
    producer = TransactionalProducer(bootstrap, f"feed-{uuid.uuid4().hex}")
    items = list(records)
    for start in range(0, len(items), batch):
        with producer.transaction():
            for key, value in items[start : start + batch]:
                producer.produce(topic, value, key)
    producer.close()
    return len(items)


def cli_env(bootstrap: str) -> dict[str, str]:
    env = {**os.environ, "EOS_KAFKA_BOOTSTRAP": bootstrap, "PYTHONUNBUFFERED": "1"}
    env.pop("EOS_CONFIG", None)
    return env


def start_cli(bootstrap: str, args: Sequence[str], **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "eos_pipeline", *args],
        cwd=ROOT,
        env=cli_env(bootstrap),
        text=True,
        **popen,
    )


def run_cli(
    bootstrap: str, args: Sequence[str], timeout: float = 60.0, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eos_pipeline", *args],
        cwd=ROOT,
        env=cli_env(bootstrap),
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
    )
