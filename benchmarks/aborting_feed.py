"""A producer that aborts every other Kafka transaction, for the chaos harness: the pipeline
reads read_committed, so none of the aborted records may ever reach PostgreSQL (the audit
reads the topic read_committed too and finds any that did as `unexpected`).

`python -m benchmarks.aborting_feed --bootstrap B --topic T --seed S --seconds N`; SIGTERM
ends it cleanly (the open transaction is aborted, so it does not hold the topic's last stable
offset back until its timeout)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from types import FrameType

from eos_pipeline.orders.generate import generate_orders
from eos_pipeline.producer import TransactionalProducer

TRANSACTION_SIZE = 20
PAUSE_S = 0.05


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.aborting_feed")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--transactional-id", default="chaos-aborting-feed")
    args = p.parse_args(argv)
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    records = generate_orders(10**9, seed=args.seed)
    deadline = time.monotonic() + args.seconds
    with TransactionalProducer(
        args.bootstrap, args.transactional_id, transaction_timeout_ms=15_000
    ) as producer:
        n = 0
        while not stop.is_set() and time.monotonic() < deadline:
            producer.begin()
            for _ in range(TRANSACTION_SIZE):
                key, value = next(records)
                producer.produce(args.topic, value, key)
            if n % 2:
                producer.abort()
            else:
                producer.commit()
            n += 1
            stop.wait(PAUSE_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
