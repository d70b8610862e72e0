"""`produce`: JSON lines (a file or stdin) or generated orders events into a topic, one Kafka
transaction per batch. After each commit it prints `committed N lines` (N counts input lines
from the start, skipped ones included), so after a crash `--skip N` resumes exactly where the
last visible batch ended: read_committed consumers never see part of a batch."""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from typing import Any, BinaryIO

from ..admin import require_topics
from ..config import Settings
from ..errors import ConfigError, KafkaError, TransactionAborted
from ..orders.generate import DEFAULT_OPEN_ORDERS, generate_orders
from ..producer import DEFAULT_KEY_FIELD, TransactionalProducer, default_transactional_id
from ..shutdown import Interrupted, StopRequest

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000
# A batch whose transaction was aborted (librdkafka's txn_requires_abort) is redone this often.
BATCH_ATTEMPTS = 3

# key (None: taken from the value's key field) and value; an empty value is a blank line,
# counted as input but not produced.
Line = tuple[bytes | None, bytes]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "produce",
        help="produce JSON lines or generated orders events, one Kafka transaction per batch",
        description=__doc__,
    )
    parser.add_argument("--topic", required=True, help="the topic to write to")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", metavar="F.jsonl", help="a JSON-lines file, or - for stdin")
    source.add_argument("--generate", type=int, metavar="N", help="N generated orders events")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument(
        "--orders",
        type=int,
        default=DEFAULT_OPEN_ORDERS,
        metavar="K",
        help=f"generated orders open at once (default {DEFAULT_OPEN_ORDERS})",
    )
    parser.add_argument(
        "--poison-rate", type=float, default=0.0, metavar="R", help="share of invalid events"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="B",
        help=f"input lines per Kafka transaction (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--key-field",
        default=DEFAULT_KEY_FIELD,
        help=f"JSON field whose value is the record key (default {DEFAULT_KEY_FIELD}; '' for none)",
    )
    parser.add_argument(
        "--transactional-id",
        metavar="ID",
        help="stable per producing instance (default eos-produce.TOPIC.HOSTNAME)",
    )
    parser.add_argument(
        "--skip", type=int, default=0, metavar="N", help="skip the first N input lines (resume)"
    )
    parser.set_defaults(handler=run)


def check_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if args.skip < 0:
        raise ConfigError("--skip must not be negative")
    if args.generate is not None and args.generate < 0:
        raise ConfigError("--generate must not be negative")
    if args.orders < 1:
        raise ConfigError("--orders must be at least 1")
    if not 0.0 <= args.poison_rate <= 1.0:
        raise ConfigError("--poison-rate must be between 0 and 1")


def file_lines(fh: BinaryIO) -> Iterator[Line]:
    for raw in fh:
        yield None, raw.rstrip(b"\r\n")


def open_input(args: argparse.Namespace, stack: ExitStack) -> Iterator[Line]:
    """The input lines after `--skip`; a generated stream resumes deterministically too."""
    lines: Iterable[Line]
    if args.generate is not None:
        lines = generate_orders(
            args.generate, seed=args.seed, open_orders=args.orders, poison_rate=args.poison_rate
        )
    elif args.file == "-":
        lines = file_lines(sys.stdin.buffer)
    else:
        try:
            fh = stack.enter_context(open(args.file, "rb"))  # noqa: SIM115 (closed by the stack)
        except OSError as exc:
            raise ConfigError(f"cannot read {args.file}: {exc.strerror}") from None
        lines = file_lines(fh)
    return itertools.islice(lines, args.skip, None)


def read_batch(lines: Iterator[Line], size: int, stop: StopRequest) -> tuple[list[Line], bool]:
    """Up to `size` lines and whether more may follow. A stop signal while blocked on input
    ends the batch early: the lines already read still form a whole batch."""
    batch: list[Line] = []
    try:
        with stop.interruptible():
            for line in lines:
                batch.append(line)
                if len(batch) == size:
                    return batch, True
    except Interrupted:
        return batch, False
    return batch, False


def commit_batch(producer: TransactionalProducer, topic: str, batch: list[Line]) -> None:
    """The batch as one transaction; an aborted transaction is redone from the batch start."""
    for attempt in range(1, BATCH_ATTEMPTS + 1):
        try:
            with producer.transaction():
                for key, value in batch:
                    if value:
                        producer.produce(topic, value, key)
            return
        except TransactionAborted as exc:
            log.warning("batch aborted (attempt %d of %d): %s", attempt, BATCH_ATTEMPTS, exc)
    raise KafkaError(f"a batch was aborted {BATCH_ATTEMPTS} times; giving up")


def run(args: argparse.Namespace, settings: Settings) -> int:
    check_args(args)
    require_topics(settings.kafka_bootstrap, settings.kafka_config, [args.topic])
    committed = args.skip
    with ExitStack() as stack:
        lines = open_input(args, stack)
        stop = stack.enter_context(StopRequest())
        producer = TransactionalProducer(
            settings.kafka_bootstrap,
            args.transactional_id or default_transactional_id("produce", args.topic),
            key_field=args.key_field or None,
            config=settings.kafka_config,
        )
        stack.callback(producer.close)
        try:
            more = True
            while more and not stop.requested:
                batch, more = read_batch(lines, args.batch_size, stop)
                if batch:
                    commit_batch(producer, args.topic, batch)
                    committed += len(batch)
                    print(f"committed {committed} lines", flush=True)
        finally:
            report(committed, stop, producer)
    return 130 if stop.requested else 0


def report(committed: int, stop: StopRequest, producer: TransactionalProducer) -> None:
    m = producer.metrics
    log.info(
        "%d records in %d transactions (%d aborted), %d bytes, %d delivery failures, "
        "%d waits on a full local queue",
        m.committed_messages,
        m.transactions_committed,
        m.transactions_aborted,
        m.bytes,
        m.failures,
        m.queue_full_waits,
    )
    done = "interrupted: " if stop.requested else ""
    print(f"{done}committed {committed} lines; resume with --skip {committed}", flush=True)
