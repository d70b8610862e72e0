"""The refresher's decisions and the `views` output formats, without a database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from eos_pipeline.views import CUSTOMER_ORDER_TOTALS, RefreshPolicy, ViewRefresher
from eos_pipeline.views.refresher import _Schedule, backoff_delay, is_due
from eos_pipeline.views.render import as_csv, as_json, status_row, table
from eos_pipeline.views.status import ViewStatus
from eos_pipeline.views.watermark import PartitionOffset


def test_is_due_by_batches_or_seconds_whichever_first() -> None:
    policy = RefreshPolicy(every_seconds=10, every_batches=3)
    assert not is_due(policy, since_last_s=9.9, batches_since=2)
    assert is_due(policy, since_last_s=0, batches_since=3)
    assert is_due(policy, since_last_s=10, batches_since=0)
    assert not is_due(RefreshPolicy(), since_last_s=1e9, batches_since=10**9)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(n, 0.5, 3.0) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff_delay(10_000, 1.0, 60.0) == 60.0


def test_next_wakeup_waits_for_the_retry_after_a_failure() -> None:
    schedule = _Schedule(CUSTOMER_ORDER_TOTALS, last_at=0.0, batches_at_last=0)
    assert schedule.next_wakeup(now=5.0) == 30.0
    schedule.failures, schedule.retry_at = 1, 40.0
    assert schedule.next_wakeup(now=35.0) == 40.0
    assert schedule.next_wakeup(now=45.0) == 45.0


def test_only_scheduled_materialized_views_are_refreshed() -> None:
    from eos_pipeline.views import BUILTIN_VIEWS, MaterializedView

    manual = MaterializedView("manual_one", "SELECT 1 AS a", ("a",))
    refresher = ViewRefresher("postgresql://x@127.0.0.1:1/x", [*BUILTIN_VIEWS, manual])
    assert [v.name for v in refresher.views] == ["customer_order_totals", "revenue_by_hour"]


def test_batch_committed_without_a_thread_only_counts() -> None:
    refresher = ViewRefresher("postgresql://x@127.0.0.1:1/x", [CUSTOMER_ORDER_TOTALS])
    refresher.batch_committed()
    refresher.batch_committed(4)
    assert refresher._batch_count() == 5
    refresher.stop()  # never started: returns at once
    assert not refresher.alive


COLUMNS = ["customer_id", "revenue", "last_order_at"]
ROWS = [("c1", Decimal("10.50"), datetime(2024, 1, 2, 3, 4, tzinfo=UTC)), ("c,2", None, None)]


def test_table_csv_and_json_output() -> None:
    assert table(COLUMNS, ROWS).splitlines() == [
        "customer_id  revenue  last_order_at",
        "c1           10.50    2024-01-02T03:04:00+00:00",
        "c,2",
    ]
    assert as_csv(COLUMNS, ROWS).splitlines()[2] == '"c,2",,'
    assert json.loads(as_json(COLUMNS, ROWS)) == [
        {"customer_id": "c1", "revenue": "10.50", "last_order_at": "2024-01-02T03:04:00+00:00"},
        {"customer_id": "c,2", "revenue": None, "last_order_at": None},
    ]


def test_status_rows() -> None:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    offsets = (PartitionOffset("g", "orders", 0, 5), PartitionOffset("g", "orders", 1, None))
    done = ViewStatus("v", "materialized", 3, at, 12.4, offsets)
    assert status_row(done)[2:] == ("3", at.isoformat(), "12 ms", "g:orders[0]=5 g:orders[1]=-")
    never = ViewStatus("v", "materialized", 0, None, None, None)
    assert status_row(never)[-1] == "never refreshed"
    live = ViewStatus("s", "incremental", 4, None, None, None)
    assert status_row(live)[-1].startswith("live")
    missing = ViewStatus("v", "materialized", None, None, None, None)
    assert status_row(missing)[3] == "not in database"
