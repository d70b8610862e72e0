"""A handler for the zombie test: the orders handler, stalling once on its first batch."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from eos_pipeline.events import Event
from eos_pipeline.orders.handler import handle_orders
from eos_pipeline.orders.schema import parse_order_event
from eos_pipeline.writer import Writer


class StallOnce:
    deserialize = staticmethod(parse_order_event)

    def __init__(self) -> None:
        self.stalled = False

    def __call__(self, events: Sequence[Event], writer: Writer) -> None:
        marker = os.environ.get("EOS_TEST_STALL_FILE")
        if marker and not self.stalled:
            self.stalled = True
            Path(marker).write_text(str(len(events)))
            time.sleep(float(os.environ.get("EOS_TEST_STALL_SECONDS", "10")))
        handle_orders(events, writer)


handler = StallOnce()


class Explodes:
    """Fails on every batch holding an order_created whose order id ends in '7'."""

    deserialize = staticmethod(parse_order_event)

    def __call__(self, events: Sequence[Event], writer: Writer) -> None:
        for e in events:
            if e.value.type == "order_created" and e.value.order_id.endswith("7"):
                raise RuntimeError(f"cannot handle {e.value.order_id}")
        handle_orders(events, writer)


exploding = Explodes()
