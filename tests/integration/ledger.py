"""Handlers for the end-to-end tests.

`handler` appends every event it is given to `eos_test_ledger`, a table with NO key, in the
batch transaction, then runs the orders handler. The orders tables are idempotent by design, so
they would hide a batch committed twice; the ledger would not: a source offset appearing twice
in it is a duplicate the pipeline let through.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from eos_pipeline.events import Event
from eos_pipeline.orders.handler import handle_orders
from eos_pipeline.orders.schema import parse_order_event
from eos_pipeline.writer import Writer

# `seq` numbers rows in commit order, so the order of handling per partition can be checked.
LEDGER_DDL = (
    "CREATE TABLE IF NOT EXISTS eos_test_ledger (seq bigserial, src_topic text NOT NULL, "
    "src_partition int NOT NULL, src_offset bigint NOT NULL, src_key bytea)"
)


def record(events: Sequence[Event], writer: Writer) -> None:
    writer.insert(
        "eos_test_ledger",
        ("src_topic", "src_partition", "src_offset", "src_key"),
        [(e.topic, e.partition, e.offset, e.key) for e in events],
    )


class Ledger:
    deserialize = staticmethod(parse_order_event)

    def __call__(self, events: Sequence[Event], writer: Writer) -> None:
        record(events, writer)
        handle_orders(events, writer)


class StallOnce(Ledger):
    """Stalls once, on its first batch, for EOS_TEST_STALL_SECONDS (the zombie test)."""

    def __init__(self) -> None:
        self.stalled = False

    def __call__(self, events: Sequence[Event], writer: Writer) -> None:
        marker = os.environ.get("EOS_TEST_STALL_FILE")
        if marker and not self.stalled:
            self.stalled = True
            Path(marker).write_text(str(len(events)))
            time.sleep(float(os.environ.get("EOS_TEST_STALL_SECONDS", "10")))
        super().__call__(events, writer)


class Explodes(Ledger):
    """Fails on every batch holding an order_created whose order id ends in '7'."""

    def __call__(self, events: Sequence[Event], writer: Writer) -> None:
        for e in events:
            if e.value.type == "order_created" and e.value.order_id.endswith("7"):
                raise RuntimeError(f"cannot handle {e.value.order_id}")
        super().__call__(events, writer)


class Slow(Ledger):
    """Waits EOS_TEST_SLOW_MS per batch, like a handler calling a slow service."""

    def __call__(self, events: Sequence[Event], writer: Writer) -> None:
        time.sleep(float(os.environ.get("EOS_TEST_SLOW_MS", "20")) / 1000)
        super().__call__(events, writer)


handler = Ledger()
slow = Slow()
stalling = StallOnce()
exploding = Explodes()
