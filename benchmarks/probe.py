"""The default orders handler plus a latency probe: after the handler's writes, each batch adds
one row to `bench_commit_log` with `clock_timestamp()` and the Kafka timestamps of its records.
The row commits (or vanishes) with the batch, so it dates commits that really happened; the
time it records is taken a few statements before COMMIT (offsets update and commit itself
are not in it)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from eos_pipeline.events import Event
from eos_pipeline.orders.handler import handle_orders
from eos_pipeline.writer import Writer

CREATE_LOG = (
    "CREATE TABLE IF NOT EXISTS bench_commit_log "
    "(committed_at timestamptz NOT NULL, kafka_ts_ms bigint[] NOT NULL)"
)
LATENCIES_SQL = (
    "SELECT extract(epoch FROM committed_at) * 1000 - t "
    "FROM bench_commit_log, unnest(kafka_ts_ms) AS t"
)


class ProbedOrdersHandler:
    deserialize = staticmethod(handle_orders.deserialize)

    def __call__(self, events: Sequence[Event], writer: Writer) -> None:
        handle_orders(events, writer)
        writer.execute(
            "INSERT INTO bench_commit_log VALUES (clock_timestamp(), %s)",
            ([e.timestamp_ms for e in events],),
        )


handle_orders_probed = ProbedOrdersHandler()


class SlowOrdersHandler:
    """The default handler after `wait_s` of waiting per batch, like a call to a slow service:
    the case `run --workers N` is for."""

    deserialize = staticmethod(handle_orders.deserialize)

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s

    def __call__(self, events: Sequence[Event], writer: Writer) -> None:
        time.sleep(self.wait_s)
        handle_orders(events, writer)


# 5 ms is about what a batch of 50 events costs this pipeline's own client and server CPU on
# a small machine, so only half of the time is waiting; at 20 ms the waiting dominates.
handle_orders_slowly = SlowOrdersHandler(0.005)
handle_orders_very_slowly = SlowOrdersHandler(0.020)
