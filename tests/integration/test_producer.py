"""TransactionalProducer against the real broker: commit and abort visibility, fencing,
backpressure, and partitioning the way the Java client does it."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from eos_pipeline.errors import ProducerFenced
from eos_pipeline.producer import State, TransactionalProducer

from .kafka_io import read_committed, read_placed


def tid() -> str:
    return f"tp-{uuid.uuid4().hex[:10]}"


def test_aborted_transaction_is_invisible_and_counted(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    with TransactionalProducer(kafka_bootstrap, tid()) as producer:
        with producer.transaction():
            for i in range(10):
                producer.produce_record(topic, {"order_id": f"o{i}", "n": i})
        with pytest.raises(RuntimeError), producer.transaction():
            producer.produce_record(topic, {"order_id": "gone"})
            raise RuntimeError("the batch failed half-way")
        producer.begin()
        producer.produce(topic, b'{"order_id": "last"}')
        producer.commit()
        metrics = producer.metrics
    assert (metrics.transactions_committed, metrics.transactions_aborted) == (2, 1)
    assert metrics.committed_messages == 11 and metrics.failures == 0
    assert metrics.messages + metrics.purged == 12 and metrics.bytes > 0
    values = [v for _, v in read_committed(kafka_bootstrap, topic, expect=11, settle=1.0)]
    assert len(values) == 11 and b'{"order_id":"gone"}' not in values


def test_newer_producer_fences_the_older_for_good(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic, shared = new_topic(), tid()
    old = TransactionalProducer(kafka_bootstrap, shared)
    with old.transaction():
        old.produce(topic, b'{"order_id": "before"}')
    new = TransactionalProducer(kafka_bootstrap, shared)
    fenced = pytest.raises(ProducerFenced, match=f"transactional.id '{shared}' took over")
    with fenced, old.transaction():
        old.produce(topic, b'{"order_id": "zombie"}')
    assert old.state is State.DEAD
    with pytest.raises(ProducerFenced):
        old.begin()
    with new.transaction():
        new.produce(topic, b'{"order_id": "after"}')
    new.close()
    old.close()
    values = sorted(
        (v for _, v in read_committed(kafka_bootstrap, topic, expect=2, settle=1.0)),
        key=lambda v: v or b"",
    )
    assert values == [b'{"order_id": "after"}', b'{"order_id": "before"}']


def test_bounded_in_flight_and_full_queue_drop_nothing(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=3)
    producer = TransactionalProducer(
        kafka_bootstrap,
        tid(),
        max_in_flight=50,
        config={"queue.buffering.max.messages": "20", "linger.ms": "5"},
    )
    peak = 0
    with producer.transaction():
        for i in range(3000):
            producer.produce_record(topic, {"order_id": f"o{i % 97}", "n": i})
            peak = max(peak, producer.in_flight)
    producer.close()
    assert peak <= 50
    assert producer.metrics.queue_full_waits > 0
    assert producer.metrics.committed_messages == producer.metrics.messages == 3000
    assert len(read_committed(kafka_bootstrap, topic, expect=3000, settle=1.0)) == 3000


def java_murmur2_partition(key: bytes, partitions: int) -> int:
    """Kafka's Java DefaultPartitioner: toPositive(Utils.murmur2(key)) % partitions."""
    m, length = 0x5BD1E995, len(key)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = (int.from_bytes(key[i : i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = key[whole:]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h = ((h ^ tail[0]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def test_keys_land_where_the_java_client_puts_them(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=6)
    with TransactionalProducer(kafka_bootstrap, tid()) as producer, producer.transaction():
        for i in range(200):
            producer.produce_record(topic, {"order_id": f"ord-{i}"})
    placed = read_placed(kafka_bootstrap, topic, expect=200, settle=0.5)
    assert len(placed) == 200
    assert len({p for p, _, _ in placed}) == 6
    for partition, key, _ in placed:
        assert key is not None and partition == java_murmur2_partition(key, 6), key
