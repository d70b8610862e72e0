"""The refresher thread on the real PostgreSQL: it refreshes after N committed batches with a
watermark equal to eos_offsets, and a failing refresh is retried, never fatal."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from eos_pipeline.config import Settings
from eos_pipeline.views import (
    CUSTOMER_ORDER_TOTALS,
    MaterializedView,
    ViewRefresher,
    after_batches,
    refresher_from_settings,
)
from eos_pipeline.views.materialized import create_statements
from eos_pipeline.views.status import fetch_rows

from .test_views import expected_customer_totals, seed, set_offsets

Conn = psycopg.Connection[Any]


def refreshes(db: Conn, name: str) -> int:
    row = db.execute(
        "SELECT refreshes FROM eos_view_refreshes WHERE view_name = %s", (name,)
    ).fetchone()
    return int(row[0]) if row else 0


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_refreshes_after_n_batches_with_the_offsets_as_watermark(
    database_url: str, db: Conn
) -> None:
    s = seed(db, random.Random(11))
    set_offsets(db, {("orders", 0): 17, ("orders", 1): 4, ("orders", 2): None})
    view = replace(CUSTOMER_ORDER_TOTALS, refresh=after_batches(3))
    refresher = ViewRefresher(database_url, [view], poll_interval_s=0.05)
    refresher.start()
    try:
        refresher.batch_committed()
        refresher.batch_committed()
        time.sleep(0.5)
        assert refreshes(db, view.name) == 0
        refresher.batch_committed()
        wait_for(lambda: refreshes(db, view.name) == 1)
    finally:
        refresher.stop(timeout_s=5)
    assert not refresher.alive
    assert fetch_rows(db, view, None)[1] == expected_customer_totals(s)
    watermark = db.execute(
        "SELECT offsets FROM eos_view_refreshes WHERE view_name = %s", (view.name,)
    ).fetchone()
    in_offsets = db.execute(
        "SELECT json_agg(json_build_object('group', consumer_group, 'topic', topic,"
        " 'partition', partition, 'next_offset', next_offset)"
        " ORDER BY consumer_group, topic, partition) FROM eos_offsets"
    ).fetchone()
    assert watermark is not None and in_offsets is not None
    assert watermark[0] == in_offsets[0]


def test_a_failing_refresh_is_retried_and_not_fatal(
    database_url: str, db: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    late = MaterializedView("late_view", "SELECT 1 AS a", ("a",), refresh=after_batches(1))
    healthy = replace(CUSTOMER_ORDER_TOTALS, refresh=after_batches(1))
    refresher = ViewRefresher(
        database_url, [late, healthy], poll_interval_s=0.05, backoff_base_s=0.1
    )
    caplog.set_level(logging.WARNING, "eos_pipeline.views")
    refresher.start()
    try:
        refresher.batch_committed()
        wait_for(lambda: refreshes(db, healthy.name) == 1)
        wait_for(lambda: "refresh of view late_view failed (2 in a row)" in caplog.text)
        assert refresher.alive
        for statement in create_statements(late):
            db.execute(statement)
        wait_for(lambda: refreshes(db, late.name) == 1)
    finally:
        refresher.stop(timeout_s=5)
    assert not refresher.alive


def test_refresher_from_settings_takes_builtin_and_module_views(database_url: str) -> None:
    refresher = refresher_from_settings(Settings(database_url=database_url), modules=())
    assert [v.name for v in refresher.views] == ["customer_order_totals", "revenue_by_hour"]
    refresher.start()
    refresher.stop(timeout_s=5)
    assert not refresher.alive
