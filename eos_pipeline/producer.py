"""A transactional Kafka producer: every batch is one Kafka transaction, and every librdkafka
error is sorted into the three classes its documentation defines.

- retriable: the same call is repeated after a backoff (until a deadline);
- `txn_requires_abort`: the transaction is aborted and `TransactionAborted` tells the caller
  to rewind its input to the batch start and redo the batch;
- fatal, fenced or unclassified: `ProducerFenced` / `KafkaError`; the producer is dead and a
  new one (a new process) is needed.

A full local queue (`BufferError`) is backpressure, not an error: the producer serves delivery
reports and tries again, so no message is ever dropped.
"""

from __future__ import annotations

import enum
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import orjson
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException, Producer, TopicPartition

from .errors import ConfigError, EosError, KafkaError, ProducerFenced, TransactionAborted
from .logs import LIBRDKAFKA_LOGGER

log = logging.getLogger(__name__)

T = TypeVar("T")
Serializer = Callable[[Any], bytes]

DEFAULT_KEY_FIELD = "order_id"
# librdkafka's name for the Java client's default partitioner (murmur2 of the key; keyless
# records spread at random), so Java and Python producers put a key on the same partition.
DEFAULT_PARTITIONER = "murmur2_random"
DEFAULT_TRANSACTION_TIMEOUT_MS = 60_000
# How long before the transaction timeout a message must be given up: a message still queued
# when its transaction times out would be written outside that transaction.
MESSAGE_TIMEOUT_MARGIN_MS = 5_000
DEFAULT_MAX_IN_FLIGHT = 100_000
CALL_TIMEOUT_S = 30.0
RETRY_DEADLINE_S = 60.0
BUFFER_FULL_POLL_S = 0.05

_FENCED_CODES = frozenset(
    {RdKafkaError._FENCED, RdKafkaError.PRODUCER_FENCED, RdKafkaError.INVALID_PRODUCER_EPOCH}
)

# Delivery reports of records an abort removed from the queue: expected, not failures.
_PURGE_CODES = frozenset({RdKafkaError._PURGE_QUEUE, RdKafkaError._PURGE_INFLIGHT})


class ErrorClass(enum.Enum):
    RETRY = "retry"
    ABORT = "abort"
    FENCED = "fenced"
    FATAL = "fatal"


def classify(err: RdKafkaError) -> ErrorClass:
    """librdkafka's error classes in the order that decides: being fenced or fatal ends the
    producer whatever else the error says; anything unclassified is treated as fatal."""
    if err.code() in _FENCED_CODES:
        return ErrorClass.FENCED
    if err.fatal():
        return ErrorClass.FATAL
    if err.txn_requires_abort():
        return ErrorClass.ABORT
    if err.retriable():
        return ErrorClass.RETRY
    return ErrorClass.FATAL


def backoff_s(attempt: int, base: float = 0.1, cap: float = 5.0) -> float:
    """Exponential backoff for the n-th retry (0-based), capped."""
    return float(min(cap, base * 2**attempt))


def extract_key(value: bytes, field: str | None) -> bytes | None:
    """The partitioning key: a top-level field of the JSON value, as UTF-8 text. A value that
    is not a JSON object or lacks the field gets no key (and a random partition): the producer
    is a transport, and rejecting poison is the consumer's job."""
    if not field:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or doc.get(field) is None:
        return None
    key = doc[field]
    return (key if isinstance(key, str) else orjson.dumps(key).decode()).encode()


def default_transactional_id(role: str, name: str, host: str | None = None) -> str:
    """Stable per process instance: a restarted instance reuses its id and so fences (and
    aborts the open transaction of) its crashed predecessor. A second instance on the same
    host needs its own id."""
    return f"eos-{role}.{name}.{host or socket.gethostname()}"


def producer_config(
    bootstrap: str,
    transactional_id: str,
    *,
    transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
    partitioner: str = DEFAULT_PARTITIONER,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str | int]:
    """librdkafka settings for a transactional producer, checked: `message.timeout.ms` must
    stay below `transaction.timeout.ms`, which must exceed the longest batch."""
    conf: dict[str, str | int] = {
        "bootstrap.servers": bootstrap,
        "transactional.id": transactional_id,
        "enable.idempotence": "true",
        "acks": "all",
        "partitioner": partitioner,
        "transaction.timeout.ms": transaction_timeout_ms,
        **(extra or {}),
    }
    txn_ms = int(conf["transaction.timeout.ms"])
    conf.setdefault("message.timeout.ms", max(1_000, txn_ms - MESSAGE_TIMEOUT_MARGIN_MS))
    msg_ms = int(conf["message.timeout.ms"])
    if msg_ms >= txn_ms:
        raise ConfigError(
            f"message.timeout.ms ({msg_ms}) must be below transaction.timeout.ms ({txn_ms})"
        )
    return conf


@dataclass
class ProducerMetrics:
    """Counters the caller may read at any time; delivery reports feed the first four.
    `messages` counts records the broker acknowledged (an aborted transaction's included);
    `purged` those an abort removed before they were sent."""

    messages: int = 0
    bytes: int = 0
    failures: int = 0
    purged: int = 0
    committed_messages: int = 0
    transactions_committed: int = 0
    transactions_aborted: int = 0
    queue_full_waits: int = 0


class State(enum.Enum):
    READY = "ready"
    IN_TRANSACTION = "in a transaction"
    DEAD = "dead"
    CLOSED = "closed"


class TransactionalProducer:
    """One librdkafka producer with one stable transactional.id, used one transaction at a
    time: `with producer.transaction(): producer.produce(...)`, or begin/produce/commit."""

    def __init__(
        self,
        bootstrap: str,
        transactional_id: str,
        *,
        key_field: str | None = DEFAULT_KEY_FIELD,
        serializer: Serializer = orjson.dumps,
        partitioner: str = DEFAULT_PARTITIONER,
        transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        config: Mapping[str, str] | None = None,
    ) -> None:
        self.transactional_id = transactional_id
        self.key_field = key_field
        self.serializer = serializer
        self.max_in_flight = max_in_flight
        self.metrics = ProducerMetrics()
        self._produced = 0
        self._in_transaction = 0
        self._death: EosError | None = None
        conf = producer_config(
            bootstrap,
            transactional_id,
            transaction_timeout_ms=transaction_timeout_ms,
            partitioner=partitioner,
            extra=config,
        )
        self._producer = Producer(conf, logger=logging.getLogger(LIBRDKAFKA_LOGGER))
        self.state = State.READY
        self._call("init_transactions", self._producer.init_transactions, CALL_TIMEOUT_S)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Messages handed to librdkafka whose delivery report has not come yet."""
        m = self.metrics
        return self._produced - m.messages - m.failures - m.purged

    def begin(self) -> None:
        self._require(State.READY)
        self._call("begin_transaction", self._producer.begin_transaction)
        self._in_transaction = 0
        self.state = State.IN_TRANSACTION

    def commit(self) -> None:
        """Flush and commit; retried while librdkafka calls the failure retriable."""
        self._require(State.IN_TRANSACTION)
        self._call("commit_transaction", self._producer.commit_transaction, CALL_TIMEOUT_S)
        self._producer.poll(0)
        self.state = State.READY
        self.metrics.transactions_committed += 1
        self.metrics.committed_messages += self._in_transaction

    def abort(self) -> None:
        self._require(State.IN_TRANSACTION)
        self._abort()

    @contextmanager
    def transaction(self) -> Iterator[TransactionalProducer]:
        """Begin; commit when the block ends, abort when it raises (and re-raise)."""
        self.begin()
        try:
            yield self
        except BaseException:
            if self.state is State.IN_TRANSACTION:
                self._abort_quietly()
            raise
        self.commit()

    def close(self, timeout: float = 10.0) -> None:
        """Abort an open transaction (nothing half-done becomes visible), then flush."""
        if self.state is State.IN_TRANSACTION:
            self._abort_quietly()
        if self.state is not State.DEAD:
            self._producer.flush(timeout)
        self.state = State.CLOSED

    def __enter__(self) -> TransactionalProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- producing -------------------------------------------------------------------------

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue one record in the open transaction; the key defaults to `key_field` of the
        JSON value. Waits (serving delivery reports) while the local queue is full or too many
        records are in flight: backpressure, never a drop."""
        self._require(State.IN_TRANSACTION)
        if key is None and value is not None:
            key = extract_key(value, self.key_field)
        self._wait_for_room()
        while True:
            try:
                self._producer.produce(
                    topic, value, key, headers=list(headers or ()), on_delivery=self._delivered
                )
                break
            except BufferError:
                self.metrics.queue_full_waits += 1
                self._producer.poll(BUFFER_FULL_POLL_S)
            except KafkaException as exc:
                self._fail("produce", exc.args[0])
        self._produced += 1
        self._in_transaction += 1
        self._producer.poll(0)

    def produce_record(self, topic: str, record: Any, key: bytes | None = None) -> None:
        """Serialize with the producer's serializer (JSON by default), then `produce`."""
        self.produce(topic, self.serializer(record), key)

    def send_offsets(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        """Make the consumer's next offsets part of the open transaction (consume-transform-
        produce): they commit, or vanish, together with the records."""
        self._require(State.IN_TRANSACTION)
        self._call(
            "send_offsets_to_transaction",
            self._producer.send_offsets_to_transaction,
            offsets,
            group_metadata,
            CALL_TIMEOUT_S,
        )

    # -- internals -------------------------------------------------------------------------

    def _delivered(self, err: RdKafkaError | None, msg: Any) -> None:
        if err is None:
            self.metrics.messages += 1
            self.metrics.bytes += len(msg.value() or b"")
        elif err.code() in _PURGE_CODES:
            self.metrics.purged += 1
        else:
            self.metrics.failures += 1
            log.warning("delivery to %s failed: %s", msg.topic(), err.str())

    def _wait_for_room(self) -> None:
        while self.in_flight >= self.max_in_flight:
            self._producer.poll(BUFFER_FULL_POLL_S)

    def _require(self, wanted: State) -> None:
        if self.state is State.DEAD and self._death is not None:
            raise type(self._death)(str(self._death))
        if self.state is not wanted:
            raise KafkaError(
                f"producer {self.transactional_id!r} is {self.state.value}, "
                f"not {wanted.value}: a caller bug"
            )

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Run one librdkafka transactional call, retrying retriable failures with backoff."""
        deadline = time.monotonic() + RETRY_DEADLINE_S
        attempt = 0
        while True:
            try:
                return fn(*args)
            except KafkaException as exc:
                err: RdKafkaError = exc.args[0]
                if classify(err) is not ErrorClass.RETRY or time.monotonic() >= deadline:
                    self._fail(what, err)
                delay = backoff_s(attempt)
                log.info("%s: %s; retrying in %.1fs", what, err.str(), delay)
                time.sleep(delay)
                attempt += 1

    def _fail(self, what: str, err: RdKafkaError) -> NoReturn:
        """Raise the project's error for `err`; abort first when librdkafka asks for it."""
        kind = classify(err)
        if kind is ErrorClass.ABORT and self.state is State.IN_TRANSACTION:
            self._abort()
            raise TransactionAborted(
                f"{what} failed, transaction aborted: {err.str()}; redo the batch",
                reason=err.str(),
            )
        if kind is ErrorClass.FENCED:
            self._die(
                ProducerFenced(
                    f"producer fenced: another producer with transactional.id "
                    f"{self.transactional_id!r} took over ({err.str()}); this one stopped"
                )
            )
        self._die(KafkaError(f"{what} failed for good: {err.name()}: {err.str()}"))

    def _die(self, error: EosError) -> NoReturn:
        self.state = State.DEAD
        self._death = error
        raise error

    def _abort(self) -> None:
        # Leaving IN_TRANSACTION first makes an abort that itself asks for an abort fatal
        # in `_fail` instead of recursing.
        self.state = State.READY
        self._call("abort_transaction", self._producer.abort_transaction, CALL_TIMEOUT_S)
        self.metrics.transactions_aborted += 1

    def _abort_quietly(self) -> None:
        """Abort on the way out of a failed block; the block's own error is the one to see."""
        try:
            self._abort()
        except EosError as exc:
            log.error("could not abort the transaction: %s", exc)
