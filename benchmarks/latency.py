"""End-to-end latency of `run` under a live load: a producer paced at a fixed rate feeds a fresh
topic while the pipeline (with the probe handler) keeps up; each record's latency is its
commit time (probe) minus its Kafka timestamp (CreateTime, set when the producer queued it).
Both clocks are this machine's, so no skew enters."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg
from confluent_kafka import Producer

from eos_pipeline.db import conninfo
from eos_pipeline.orders.generate import generate_orders
from eos_pipeline.producer import DEFAULT_PARTITIONER

from .measure import Child, Usage, percentile
from .probe import CREATE_LOG, LATENCIES_SQL
from .stack import Stack, pipeline_command, sum_offsets, unique

PROBE_HANDLER = "benchmarks.probe:handle_orders_probed"


@dataclass(frozen=True)
class Latency:
    rate: int
    messages: int
    p50_ms: float
    p99_ms: float
    usage: Usage


def paced_produce(bootstrap: str, topic: str, rate: int, seconds: float, seed: int) -> int:
    """Produce `rate` records a second for `seconds` (plain idempotent producer, 5 ms linger:
    the records become visible at once, not at the end of a producer transaction)."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "partitioner": DEFAULT_PARTITIONER,
        }
    )
    records = generate_orders(int(rate * seconds), seed=seed)
    sent, start = 0, time.monotonic()
    for key, value in records:
        due = (time.monotonic() - start) * rate
        if sent >= due:
            producer.poll(0)
            time.sleep(max((sent - due) / rate, 0.001))
        producer.produce(topic, value, key)
        sent += 1
    producer.flush(30)
    return sent


def wait_for(condition: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting until {condition}")
        time.sleep(0.1)


def measure_latency(
    stack: Stack,
    batch_size: int,
    rate: int,
    seconds: float,
    partitions: int,
    extra_args: Sequence[str] = (),
) -> Latency:
    topic = stack.topic(partitions, prefix="bench-live")
    url = stack.fresh_database()
    group = unique("bench-live")
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(CREATE_LOG.encode())
    child = Child(
        pipeline_command(
            stack.bootstrap, url, topic, group, batch_size, "--handler", PROBE_HANDLER, *extra_args
        )
    )
    try:
        # Partitions claimed: the offsets rows exist once the group has assigned them.
        wait_for("the pipeline joined", lambda: _claimed(url, group) == partitions, 60)
        sent = paced_produce(stack.bootstrap, topic, rate, seconds, seed=11)
        wait_for("the pipeline caught up", lambda: sum_offsets(url, group) >= sent, 120)
        usage = child.wait(timeout=child_budget(seconds))
        with psycopg.connect(conninfo(url), autocommit=True) as conn:
            lat = [float(r[0]) for r in conn.execute(LATENCIES_SQL.encode()).fetchall()]
    finally:
        child.kill()
        stack.drop(url)
    return Latency(rate, len(lat), percentile(lat, 50), percentile(lat, 99), usage)


def child_budget(seconds: float) -> float:
    return seconds + 180


def _claimed(url: str, group: str) -> int:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM eos_offsets WHERE consumer_group = %s", (group,)
        ).fetchone()
    return int(row[0]) if row else 0
