"""`run --metrics-port` serves the Prometheus series; `--mirror-offsets-to-kafka` copies the
stored offsets to the group's Kafka offsets for Kafka's own lag tools."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from eos_pipeline.audit import read_topic

from .support import (
    PipelineProcess,
    check_exactly_once,
    free_port,
    produce,
    scrape_metrics,
    stored_offsets,
    wait_caught_up,
)


def test_metrics_and_offset_mirror(
    kafka_bootstrap: str,
    database_url: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, 1500, seed=61, poison_rate=0.05)
    port = free_port()
    pipeline = PipelineProcess(
        kafka_bootstrap,
        database_url,
        topic,
        group_id,
        tmp_path,
        "--metrics-port",
        str(port),
        "--mirror-offsets-to-kafka",
    ).start()
    try:
        records = read_topic(kafka_bootstrap, topic)
        wait_caught_up(database_url, group_id, records, alive=lambda: pipeline.running)
        time.sleep(1)
        metrics = scrape_metrics(port)
        assert pipeline.stop() == 0, pipeline.logs()
    finally:
        pipeline.kill()
    report = check_exactly_once(kafka_bootstrap, database_url, topic, group_id)

    assert metrics["eos_messages_consumed_total"] == 1500
    assert metrics["eos_messages_committed_total"] == report.processed
    dead = sum(v for k, v in metrics.items() if k.startswith("eos_dead_letters_total"))
    assert dead == report.dead_letters > 0
    assert metrics["eos_batches_total"] >= 1
    # Sampled: up to 64 records of each batch.
    assert 0 < metrics["eos_end_to_end_seconds_count"] <= 64 * metrics["eos_batches_total"]
    assert metrics['eos_rebalances_total{kind="assign"}'] >= 1
    assert metrics["eos_commit_seconds_count"] == metrics["eos_batches_total"]
    lags = {k: v for k, v in metrics.items() if k.startswith("eos_partition_lag")}
    assert len(lags) == 2 and all(v <= 1 for v in lags.values())  # a trailing commit marker

    stored = stored_offsets(database_url, group_id)
    mirror = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group_id})
    try:
        committed = mirror.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=10)
    finally:
        mirror.close()
    assert {(tp.topic, tp.partition): tp.offset for tp in committed} == stored
