"""`run --workers N`: backpressure pauses and resumes partitions under a slow handler, the
rate limit holds consumption back, and partition order is kept (the ledger's check)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from eos_pipeline.audit import read_topic

from .support import (
    PipelineProcess,
    check_exactly_once,
    free_port,
    produce,
    scrape_metrics,
    wait_caught_up,
)


def _metric(port: int, series: str) -> float:
    return scrape_metrics(port).get(series, 0.0)


def test_backpressure_pauses_and_resumes_under_a_slow_handler(
    kafka_bootstrap: str,
    database_url: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic(partitions=4)
    produce(kafka_bootstrap, topic, 30000, seed=71, batch_size=5000)
    port = free_port()
    pipeline = PipelineProcess(
        kafka_bootstrap,
        database_url,
        topic,
        group_id,
        tmp_path,
        "--handler",
        "tests.integration.ledger:slow",
        "--workers",
        "2",
        "--batch-size",
        "100",
        "--metrics-port",
        str(port),
    )
    pipeline.start({**os.environ, "EOS_TEST_SLOW_MS": "30"})
    try:
        pipeline.wait_for("assigned")
        wait_caught_up(
            database_url,
            group_id,
            read_topic(kafka_bootstrap, topic),
            timeout=120,
            alive=lambda: pipeline.running,
        )
        pauses = _metric(port, 'eos_partition_pauses_total{reason="backpressure"}')
        resumes = _metric(port, 'eos_partition_resumes_total{reason="backpressure"}')
        assert pipeline.stop() == 0, pipeline.logs()
    finally:
        pipeline.kill()
    assert pauses > 0 and resumes > 0
    check_exactly_once(kafka_bootstrap, database_url, topic, group_id, expect_records=30000)


def test_max_rate_holds_consumption_back(
    kafka_bootstrap: str,
    database_url: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, 3000, seed=72)
    port = free_port()
    pipeline = PipelineProcess(
        kafka_bootstrap,
        database_url,
        topic,
        group_id,
        tmp_path,
        "--max-rate",
        "1000",
        "--metrics-port",
        str(port),
    ).start()
    try:
        wait_caught_up(
            database_url,
            group_id,
            read_topic(kafka_bootstrap, topic),
            timeout=120,
            alive=lambda: pipeline.running,
        )
        pauses = _metric(port, 'eos_partition_pauses_total{reason="rate"}')
        assert pipeline.stop() == 0, pipeline.logs()
    finally:
        pipeline.kill()
    assert pauses > 0
    check_exactly_once(kafka_bootstrap, database_url, topic, group_id, expect_records=3000)
