"""The Kafka-to-Kafka stage (`run --sink kafka`): consume, transform, produce, exactly once.

Each batch is ONE Kafka transaction holding both the output records and the input offsets
(`send_offsets_to_transaction`), so the offsets live in Kafka on this path and commit or vanish
together with the output. Readers of the output topic must use read_committed.

- partitions revoked: the in-flight transaction is committed while the offsets still count;
- partitions lost: the transaction is aborted (someone else may own them already);
- after any abort: every partition of the batch is sought back to the batch start (= its last
  committed offset) and the batch is redone.

Zombies are fenced twice over: by the stable transactional.id (a restarted instance aborts its
predecessor's open transaction) and by the consumer group generation carried in the group
metadata of each transaction (KIP-447). The classic group protocol is assumed (the default).
"""

from __future__ import annotations

import argparse
import logging
import pkgutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import orjson
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from .admin import require_topics
from .config import Settings
from .errors import ConfigError, HandlerError, TransactionAborted
from .logs import LIBRDKAFKA_LOGGER
from .producer import State, TransactionalProducer, default_transactional_id
from .shutdown import StopRequest

log = logging.getLogger(__name__)

DEFAULT_STAGE_HANDLER = "eos_pipeline.stage:enrich_orders"
DEFAULT_BATCH_SIZE = 500
# A batch is committed at the latest this long after its first record, so a trickle of input
# still flows through promptly (and far below transaction.timeout.ms).
DEFAULT_BATCH_SECONDS = 1.0
CONSUME_TIMEOUT_S = 0.2

OutputRecord = tuple[bytes | None, bytes | None] | Mapping[str, Any]
Partition = tuple[str, int]


class StageHandler(Protocol):
    """Turns one input record into zero or more output records: (key, value) byte pairs, or
    mappings that are serialized as JSON and keyed by the producer's key field."""

    def __call__(self, key: bytes | None, value: bytes | None) -> Iterable[OutputRecord]: ...


# -- the default handler: orders events enriched ---------------------------------------------


def enrich_event(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """`item_added` with a positive integer quantity and a decimal unit price gains
    `line_total`; None means "unchanged" (other types, and invalid events, which the
    PostgreSQL consumer dead-letters with their original bytes)."""
    if event.get("type") != "item_added":
        return None
    quantity, price = event.get("quantity"), event.get("unit_price")
    if type(quantity) is not int or quantity <= 0 or not isinstance(price, str):
        return None
    try:
        unit_price = Decimal(price)
    except InvalidOperation:
        return None
    if not unit_price.is_finite():
        return None
    return {**event, "line_total": str(unit_price * quantity)}


def enrich_orders(key: bytes | None, value: bytes | None) -> list[OutputRecord]:
    """Every input passes through, enriched where possible. Undecodable or invalid records
    are passed on unchanged rather than skipped: dropping them here would lose them silently,
    while downstream they reach the dead letters intact."""
    try:
        event = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        event = None
    enriched = enrich_event(event) if isinstance(event, dict) else None
    return [(key, value if enriched is None else orjson.dumps(enriched))]


def load_stage_handler(spec: str) -> StageHandler:
    try:
        obj = pkgutil.resolve_name(spec)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot load stage handler {spec!r}: {exc}") from None
    if not callable(obj):
        raise ConfigError(f"stage handler {spec!r} is not callable")
    handler: StageHandler = obj
    return handler


# -- batch bookkeeping (pure) --------------------------------------------------------------


@dataclass
class BatchOffsets:
    """Per partition of the open batch: where it started (the last committed offset, the
    rewind target) and the next offset to read (what the transaction commits)."""

    start: dict[Partition, int] = field(default_factory=dict)
    next: dict[Partition, int] = field(default_factory=dict)
    records: int = 0
    opened_at: float = 0.0

    def note(self, tp: Partition, offset: int, now: float) -> None:
        if not self.records:
            self.opened_at = now
        self.start.setdefault(tp, offset)
        self.next[tp] = offset + 1
        self.records += 1

    def commit_offsets(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in sorted(self.next.items())]

    def rewind_offsets(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in sorted(self.start.items())]

    def due(self, batch_size: int, max_seconds: float, now: float) -> bool:
        return self.records >= batch_size or (
            self.records > 0 and now - self.opened_at >= max_seconds
        )


def to_record(out: OutputRecord, serialize: Any) -> tuple[bytes | None, bytes | None]:
    if isinstance(out, Mapping):
        return None, serialize(dict(out))
    key, value = out
    return key, value


# -- the stage -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageOptions:
    output_topic: str
    batch_size: int = DEFAULT_BATCH_SIZE
    batch_seconds: float = DEFAULT_BATCH_SECONDS
    idle_exit_s: float | None = None


class KafkaStage:
    """One consumer and one transactional producer; one Kafka transaction per batch."""

    def __init__(
        self,
        consumer: Consumer,
        producer: TransactionalProducer,
        handler: StageHandler,
        options: StageOptions,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.handler = handler
        self.options = options
        self.batch = BatchOffsets()
        self.owned: set[Partition] = set()
        # The next offset each owned partition may hand us; lower ones were fetched before a
        # rebalance or rewind and are stale.
        self.expected: dict[Partition, int] = {}
        # Partitions of aborted batches: records fetched for them in this round are stale, and
        # they are sought back to the batch start outside the rebalance callbacks.
        self.rewound: set[Partition] = set()
        self.pending_seeks: list[TopicPartition] = []

    # Rebalance callbacks: a few lines each, calling named methods. Partitions leave `owned`
    # first, so an abort on the way never seeks a partition that is being taken away.
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.owned.add((tp.topic, tp.partition))
            self.expected.pop((tp.topic, tp.partition), None)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.owned -= {(tp.topic, tp.partition) for tp in partitions}
        if self.in_flight():
            self.commit_batch()

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.owned -= {(tp.topic, tp.partition) for tp in partitions}
        if self.in_flight():
            self.abort_batch("partitions lost")

    def in_flight(self) -> bool:
        """A batch whose transaction is still open (not after a failure that ended it)."""
        return self.batch.records > 0 and self.producer.state is State.IN_TRANSACTION

    def run(self, topics: list[str], stop: StopRequest) -> None:
        self.consumer.subscribe(
            topics, on_assign=self.on_assign, on_revoke=self.on_revoke, on_lost=self.on_lost
        )
        last_input = time.monotonic()
        while not stop.requested and not self.idle_for_long(last_input):
            if self.run_round():
                last_input = time.monotonic()
        if self.in_flight():
            self.commit_batch()

    def run_round(self) -> bool:
        """One consume call and what it brought; says whether it brought anything."""
        opts = self.options
        self.rewound.clear()
        messages = self.consumer.consume(opts.batch_size, CONSUME_TIMEOUT_S)
        self.apply_seeks()  # aborts inside rebalance callbacks during consume()
        for msg in messages:
            self.process(msg)
        now = time.monotonic()
        if self.batch.due(opts.batch_size, opts.batch_seconds, now) or (
            not messages and self.batch.records
        ):
            self.commit_batch()
        self.apply_seeks()
        return bool(messages)

    def idle_for_long(self, last_input: float) -> bool:
        idle = self.options.idle_exit_s
        return idle is not None and not self.batch.records and time.monotonic() - last_input > idle

    def wanted(self, tp: Partition, offset: int) -> bool:
        """Only records of partitions still ours, not rewound in this round, and not below
        the offset expected next (gaps are normal: transaction markers, aborted records)."""
        return tp in self.owned and tp not in self.rewound and offset >= self.expected.get(tp, 0)

    def process(self, msg: Message) -> None:
        err, offset = msg.error(), msg.offset()
        if err is not None or offset is None:
            log.warning("consumer: %s", err.str() if err else "record without offset")
            return
        tp = (str(msg.topic()), int(msg.partition() or 0))
        if not self.wanted(tp, offset):
            return
        if not self.batch.records:
            self.producer.begin()
        try:
            outputs = list(self.handler(msg.key(), msg.value()))
        except Exception as exc:
            self.producer.abort()
            raise HandlerError(
                f"stage handler failed on {tp[0]}[{tp[1]}]@{msg.offset()}: {exc!r}"
            ) from exc
        try:
            for out in outputs:
                key, value = to_record(out, self.producer.serializer)
                self.producer.produce(self.options.output_topic, value, key)
        except TransactionAborted as exc:
            self.after_abort(str(exc))
            return
        self.batch.note(tp, offset, time.monotonic())
        self.expected[tp] = offset + 1

    def commit_batch(self) -> None:
        """1. output records are already produced into the open transaction;
        2. add the input offsets (next to read) with fresh group metadata;
        3. commit both at once. An abort on the way rewinds the batch."""
        try:
            self.producer.send_offsets(
                self.batch.commit_offsets(), self.consumer.consumer_group_metadata()
            )
            self.producer.commit()
        except TransactionAborted as exc:
            self.after_abort(str(exc))
            return
        log.debug("committed %d records", self.batch.records)
        self.batch = BatchOffsets()

    def abort_batch(self, why: str) -> None:
        self.producer.abort()
        self.after_abort(why)

    def after_abort(self, why: str) -> None:
        """Plan to seek every partition of the aborted batch back to its start (= its last
        committed offset); nothing fetched for them from now on counts until then."""
        log.warning("batch of %d records aborted (%s); rewinding", self.batch.records, why)
        for tp in self.batch.rewind_offsets():
            key = (tp.topic, tp.partition)
            self.rewound.add(key)
            self.expected[key] = tp.offset
            self.pending_seeks.append(tp)
        self.batch = BatchOffsets()

    def apply_seeks(self) -> None:
        """Seek outside rebalance callbacks (seeking inside them races the fetcher); a
        partition no longer ours needs none: its next owner starts from the committed offset."""
        seeks, self.pending_seeks = self.pending_seeks, []
        for tp in seeks:
            if (tp.topic, tp.partition) not in self.owned:
                continue
            try:
                self.consumer.seek(tp)
            except KafkaException as exc:
                log.info("rewind %s[%d] skipped: %s", tp.topic, tp.partition, exc.args[0].str())


# -- entry points ------------------------------------------------------------------------------


def add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags only `run --sink kafka` has; `--handler`, `--batch-size`,
    `--batch-timeout-ms`, `--kafka-config`, `--start` and `--exit-when-idle` are run's own and
    mean the same here."""
    group = parser.add_argument_group("Kafka sink (--sink kafka)")
    group.add_argument("--output-topic", metavar="T2", help="topic the stage writes to")
    group.add_argument(
        "--transactional-id",
        metavar="ID",
        help="stable per stage instance, each instance its own (default eos-stage.GROUP.HOST)",
    )


def check_stage(output_topic: str | None, topics: Iterable[str]) -> str:
    if not output_topic:
        raise ConfigError("--sink kafka needs --output-topic")
    if output_topic in set(topics):
        raise ConfigError(f"--output-topic {output_topic} is also an input topic: a loop")
    return output_topic


def consumer_config(settings: Settings, extra: Mapping[str, str], start: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": settings.group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": start,
        **settings.kafka_config,
        **extra,
    }


def stage_options(args: argparse.Namespace, output_topic: str) -> StageOptions:
    """Options from run's flags when present (the namespace may come from elsewhere)."""
    timeout_ms = getattr(args, "batch_timeout_ms", None)
    return StageOptions(
        output_topic=output_topic,
        batch_size=getattr(args, "batch_size", None) or DEFAULT_BATCH_SIZE,
        batch_seconds=DEFAULT_BATCH_SECONDS if timeout_ms is None else timeout_ms / 1000,
        idle_exit_s=getattr(args, "exit_when_idle", None),
    )


def run_stage(args: argparse.Namespace, settings: Settings) -> int:
    """Run the stage until SIGINT/SIGTERM (or idle for --exit-when-idle seconds); the open
    batch is committed on the way out."""
    from .commands.run import parse_kafka_config

    output_topic = check_stage(getattr(args, "output_topic", None), settings.topics)
    options = stage_options(args, output_topic)
    handler = load_stage_handler(getattr(args, "handler_path", None) or DEFAULT_STAGE_HANDLER)
    require_topics(
        settings.kafka_bootstrap, settings.kafka_config, [*settings.topics, output_topic]
    )
    transactional_id = getattr(args, "transactional_id", None) or default_transactional_id(
        "stage", settings.group_id
    )
    extra = parse_kafka_config(getattr(args, "kafka_config", None))
    if getattr(args, "assignor", None):
        extra.setdefault("partition.assignment.strategy", args.assignor)
    producer = TransactionalProducer(
        settings.kafka_bootstrap, transactional_id, config=settings.kafka_config
    )
    consumer = Consumer(
        consumer_config(settings, extra, getattr(args, "start", "earliest")),
        logger=logging.getLogger(LIBRDKAFKA_LOGGER),
    )
    stage = KafkaStage(consumer, producer, handler, options)
    log.info(
        "stage %s -> %s as %r in group %s",
        ",".join(settings.topics),
        output_topic,
        transactional_id,
        settings.group_id,
    )
    try:
        with StopRequest() as stop:
            stage.run(list(settings.topics), stop)
    finally:
        consumer.close()
        producer.close()
    m = producer.metrics
    log.info(
        "stage stopped: %d records in %d transactions (%d aborted)",
        m.committed_messages,
        m.transactions_committed,
        m.transactions_aborted,
    )
    return 0
