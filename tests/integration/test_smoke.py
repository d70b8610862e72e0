"""The stack is real: Kafka transactions commit and abort, Alembic migrates both ways."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
from confluent_kafka import Consumer, Producer

from eos_pipeline.db import conninfo
from eos_pipeline.migrate import downgrade, upgrade


def _read_committed(bootstrap: str, topic: str, expect_at_least: int) -> list[bytes | None]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"smoke-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    seen: list[bytes | None] = []
    idle = 0
    while idle < 6:
        msgs = consumer.consume(100, timeout=0.5)
        real = [m for m in msgs if m.error() is None]
        seen.extend(m.value() for m in real)
        idle = idle + 1 if not real and len(seen) >= expect_at_least else 0 if real else idle + 1
    consumer.close()
    return seen


def test_transactions_commit_and_abort(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=1)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"smoke-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, value=f"committed-{i}".encode())
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, value=f"aborted-{i}".encode())
    producer.flush(10)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed-last")
    producer.commit_transaction(30)

    seen = _read_committed(kafka_bootstrap, topic, expect_at_least=6)
    assert seen == [f"committed-{i}".encode() for i in range(5)] + [b"committed-last"]


def _tables(url: str) -> set[str]:
    with psycopg.connect(conninfo(url)) as conn:
        rows = conn.execute(
            "select tablename from pg_tables where schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def test_alembic_round_trip(empty_database_url: str) -> None:
    assert "eos_offsets" not in _tables(empty_database_url)
    upgrade(empty_database_url)
    assert {"eos_offsets", "alembic_version"} <= _tables(empty_database_url)
    downgrade(empty_database_url, "base")
    assert _tables(empty_database_url) <= {"alembic_version"}
    upgrade(empty_database_url)
    assert "eos_offsets" in _tables(empty_database_url)
