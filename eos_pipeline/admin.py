"""Kafka Admin API: topics, watermarks. Used by `topics`, `replay`, `status`, tests, benchmarks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from .errors import ConfigError, KafkaError, KafkaUnavailable

ADMIN_TIMEOUT_S = 10.0


def admin_client(bootstrap: str, extra: Mapping[str, str] | None = None) -> AdminClient:
    # Quiet: every caller turns a failure into one readable error of its own, and librdkafka
    # would otherwise print a line per reconnect attempt to stderr.
    conf: dict[str, str | int | float | bool] = {"bootstrap.servers": bootstrap, "log_level": 0}
    conf.update(extra or {})
    return AdminClient(conf)


def list_topics(admin: AdminClient, timeout: float = ADMIN_TIMEOUT_S) -> dict[str, int]:
    """Topic name -> partition count (internal topics left out)."""
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot reach Kafka: {exc.args[0].str()}") from None
    return {name: len(t.partitions) for name, t in meta.topics.items() if not name.startswith("__")}


def create_topic(
    admin: AdminClient,
    name: str,
    partitions: int,
    replication_factor: int = 1,
    config: Mapping[str, str] | None = None,
    exist_ok: bool = False,
) -> bool:
    """Create a topic and wait for it; returns False when it existed and exist_ok is set."""
    new = NewTopic(
        name,
        num_partitions=partitions,
        replication_factor=replication_factor,
        config=dict(config or {}),
    )
    future = admin.create_topics([new], operation_timeout=ADMIN_TIMEOUT_S)[name]
    try:
        future.result(timeout=ADMIN_TIMEOUT_S + 5)
    except KafkaException as exc:
        err = exc.args[0]
        if err.name() == "TOPIC_ALREADY_EXISTS" and exist_ok:
            return False
        raise KafkaError(f"cannot create topic {name!r}: {err.str()}") from None
    except TimeoutError:
        raise KafkaUnavailable(f"cannot create topic {name!r}: Kafka did not answer") from None
    return True


def require_topics(bootstrap: str, extra: Mapping[str, str] | None, topics: Sequence[str]) -> None:
    """Up-front check: the broker answers (bounded time) and the topics exist."""
    existing = list_topics(admin_client(bootstrap, extra))
    missing = [t for t in topics if t not in existing]
    if missing:
        raise ConfigError(
            f"topic(s) not found on {bootstrap}: {', '.join(missing)} "
            "(create them with `python -m eos_pipeline topics create NAME --partitions N`)"
        )
