"""The baselines, each run as its own process (`python -m benchmarks.workers MODE ...`) so its
CPU and peak RSS are its own. Each prints one JSON line: messages, seconds, cpu_s (of the timed
part only).

- raw-consume: confluent-kafka reading the topic as fast as it can; the ceiling for Kafka in.
- raw-store: binary COPY of the topic's order_events rows, one transaction per batch; the
  ceiling for PostgreSQL out (the rows are read and parsed before the clock starts).
- naive-commit: poll -> insert -> Consumer.commit(asynchronous=False) per message
  (at-least-once, the textbook loop).
- naive-txn: poll -> one PostgreSQL transaction (insert + offset update) per message
  (exactly once, the slow way).
- commit-only: the ceiling for `run --workers N` with a slow handler. The topic's records are
  decoded before the clock starts; then N processes, each with its own connection and its
  share of the partitions, commit batches through the pipeline's own transaction (the
  handler, then the offsets behind the fence). No Kafka and no shared interpreter: what the
  machine allows for the same work.

The data was produced up front, so a record's age at commit here is mostly its wait in the
backlog: latency is measured separately, under a live load (`benchmarks.latency`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from psycopg.types.json import Jsonb

from eos_pipeline.audit import read_topic
from eos_pipeline.batching import Item
from eos_pipeline.db import connect, conninfo
from eos_pipeline.events import TopicPartition as TP
from eos_pipeline.handlers import DEFAULT_HANDLER, decode_record, load_handler
from eos_pipeline.offsets import claim
from eos_pipeline.orders.handler import EVENT_COLUMNS
from eos_pipeline.orders.schema import parse_order_event
from eos_pipeline.runtime import tune_for_throughput
from eos_pipeline.transaction import BatchContext, commit_batch
from eos_pipeline.writer import TableCatalog, prepare_connection

EVENT_TYPES = ("text", "int4", "int8", "text", "text", "timestamptz", "jsonb")
INSERT_EVENT = (
    f"INSERT INTO order_events ({', '.join(EVENT_COLUMNS)}) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
Row = tuple[Any, ...]


def cpu_now() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def event_row(topic: str, partition: int, offset: int, raw: bytes) -> Row:
    """The order_events row of one record, as the default handler would store it."""
    e = parse_order_event(raw)
    return (topic, partition, offset, e.order_id, e.type, e.ts, raw)


def consumer(bootstrap: str, group: str, **extra: Any) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            **extra,
        }
    )


def assign_all(c: Consumer, topic: str) -> dict[int, int]:
    """Assign every partition from the beginning; returns each partition's end offset."""
    parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    return ends


def messages(c: Consumer, ends: dict[int, int], limit: int, batch: int = 1) -> Iterator[Message]:
    """Up to `limit` records (errors and partition ends skipped), `batch` per consume call,
    until every partition's position reaches its end offset (transaction markers take
    offsets too, so counting records would wait for ones that never come)."""
    seen = 0
    topic = c.assignment()[0].topic
    pending = {p for p, end in ends.items() if end > 0}
    deadline = time.monotonic() + 600
    while seen < limit and pending and time.monotonic() < deadline:
        for m in c.consume(num_messages=min(batch, limit - seen), timeout=0.1):
            if m.error() is None:
                seen += 1
                yield m
        positions = c.position([TopicPartition(topic, p) for p in pending])
        pending -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}


def raw_consume(args: argparse.Namespace) -> dict[str, Any]:
    c = consumer(args.bootstrap, f"bench-raw-{time.time_ns()}", **{"fetch.max.bytes": 52428800})
    ends = assign_all(c, args.topic)
    n, size, cpu, t0 = 0, 0, cpu_now(), time.monotonic()
    for m in messages(c, ends, sum(ends.values()), batch=10_000):
        n, size = n + 1, size + len(m.value() or b"")  # touch the value, as a consumer would
    seconds, cpu = time.monotonic() - t0, cpu_now() - cpu
    c.close()
    return {"messages": n, "seconds": seconds, "cpu_s": cpu, "bytes": size}


def raw_store(args: argparse.Namespace) -> dict[str, Any]:
    records = read_topic(args.bootstrap, args.topic, timeout_s=600)
    rows = [event_row(r.topic, r.partition, r.offset, r.value or b"") for r in records]
    with psycopg.connect(conninfo(args.database_url), autocommit=True) as conn:
        prepare_connection(conn)
        copy_sql = f"COPY order_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        cpu, t0 = cpu_now(), time.monotonic()
        for start in range(0, len(rows), args.batch):
            with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql.encode()) as copy:
                copy.set_types(list(EVENT_TYPES))
                for row in rows[start : start + args.batch]:
                    copy.write_row(row)
        seconds, cpu = time.monotonic() - t0, cpu_now() - cpu
    return {"messages": len(rows), "seconds": seconds, "cpu_s": cpu}


def _naive(
    args: argparse.Namespace, commit: Callable[[psycopg.Connection[Any], Consumer, Message], None]
) -> dict[str, Any]:
    """The per-message loop; `commit` stores one message's result and its offset."""
    c = consumer(args.bootstrap, args.group)
    ends = assign_all(c, args.topic)
    with psycopg.connect(conninfo(args.database_url), autocommit=True) as conn:
        prepare_connection(conn)
        n, cpu, t0 = 0, cpu_now(), time.monotonic()
        for m in messages(c, ends, args.limit):
            commit(conn, c, m)
            n += 1
        seconds, cpu = time.monotonic() - t0, cpu_now() - cpu
    c.close()
    return {"messages": n, "seconds": seconds, "cpu_s": cpu}


def _row(m: Message) -> Row:
    *head, payload = event_row(
        str(m.topic()), int(m.partition() or 0), int(m.offset() or 0), m.value() or b""
    )
    return (*head, Jsonb(payload))  # a parameter, unlike a COPY field, needs its type named


def _commit_kafka(conn: psycopg.Connection[Any], c: Consumer, m: Message) -> None:
    conn.execute(INSERT_EVENT.encode(), _row(m))
    c.commit(message=m, asynchronous=False)


def _commit_txn(conn: psycopg.Connection[Any], c: Consumer, m: Message) -> None:
    with conn.transaction():
        conn.execute(INSERT_EVENT.encode(), _row(m))
        conn.execute(
            b"INSERT INTO eos_offsets (consumer_group, topic, partition, next_offset) "
            b"VALUES (%s, %s, %s, %s) ON CONFLICT (consumer_group, topic, partition) "
            b"DO UPDATE SET next_offset = EXCLUDED.next_offset",
            ("naive-txn", m.topic(), m.partition(), int(m.offset() or 0) + 1),
        )


def commit_only(args: argparse.Namespace) -> dict[str, Any]:
    spec = load_handler(args.handler)
    shares: list[list[Item]] = [[] for _ in range(args.processes)]
    for r in read_topic(args.bootstrap, args.topic, timeout_s=600):
        item = decode_record(spec, r.topic, r.partition, r.offset, None, r.value, 0, ())
        shares[r.partition % args.processes].append(item)
    fork = multiprocessing.get_context("fork")
    children = [
        fork.Process(target=_commit_share, args=(args, share, i)) for i, share in enumerate(shares)
    ]
    cpu, t0 = _children_cpu(), time.monotonic()
    for child in children:
        child.start()
    for child in children:
        child.join()
    seconds, cpu = time.monotonic() - t0, _children_cpu() - cpu
    if any(child.exitcode != 0 for child in children):
        raise RuntimeError("a committing process failed")
    return {"messages": sum(map(len, shares)), "seconds": seconds, "cpu_s": cpu}


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _commit_share(args: argparse.Namespace, items: list[Item], index: int) -> None:
    """One process: its partitions' items in batches, each committed with its offsets."""
    spec = load_handler(args.handler)
    tune_for_throughput(1)
    with connect(args.database_url) as conn:
        prepare_connection(conn)
        by_partition: dict[TP, list[Item]] = {}
        for item in items:
            by_partition.setdefault((item.topic, item.partition), []).append(item)
        claims = claim(conn, args.group, f"commit-only-{index}", sorted(by_partition))
        ctx = BatchContext(conn, TableCatalog(), spec, args.group)
        for tp, mine in by_partition.items():
            held = claims[tp]
            for start in range(0, len(mine), args.batch):
                result = commit_batch(ctx, {tp: held}, mine[start : start + args.batch])
                held = held.advanced(result.committed[tp])


def naive_commit(args: argparse.Namespace) -> dict[str, Any]:
    return _naive(args, _commit_kafka)


def naive_txn(args: argparse.Namespace) -> dict[str, Any]:
    return _naive(args, _commit_txn)


MODES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "raw-consume": raw_consume,
    "raw-store": raw_store,
    "naive-commit": naive_commit,
    "naive-txn": naive_txn,
    "commit-only": commit_only,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.workers")
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--database-url", default="")
    p.add_argument("--group", default="bench-naive")
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--limit", type=int, default=20_000)
    p.add_argument("--handler", default=DEFAULT_HANDLER)
    p.add_argument("--processes", type=int, default=1)
    args = p.parse_args(argv)
    result = MODES[args.mode](args)
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
