"""Stage handlers for tests, importable by stage processes as `tests.integration.stage_handlers`."""

from __future__ import annotations

import time

from eos_pipeline.stage import OutputRecord, enrich_orders


def slow_enrich(key: bytes | None, value: bytes | None) -> list[OutputRecord]:
    """The default handler, slowed so that kills land in the middle of the work."""
    time.sleep(0.003)
    return enrich_orders(key, value)
