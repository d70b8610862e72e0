"""Views on the real PostgreSQL: contents equal an expectation computed in Python, readers are
not blocked by a refresh, the watermark comes from the refresh's own snapshot, rebuild repairs
a summary, and user views are created by the same migration helpers."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from psycopg.types.json import Jsonb
from sqlalchemy import create_engine, pool

from eos_pipeline.db import sqlalchemy_url
from eos_pipeline.errors import ViewError
from eos_pipeline.views import (
    CUSTOMER_ORDER_TOTALS,
    ORDER_STATUS_COUNTS,
    REVENUE_BY_HOUR,
    MaterializedView,
    create_view_op,
    drop_view_op,
    rebuild_view,
    refresh_view,
)
from eos_pipeline.views.materialized import refresh_in_transaction
from eos_pipeline.views.status import fetch_rows
from eos_pipeline.views.watermark import read_offsets, snapshot_transaction

Conn = psycopg.Connection[Any]
STATUSES = ("created", "paid", "shipped", "cancelled")
T0 = datetime(2024, 3, 1, 22, 0, tzinfo=UTC)


@dataclass
class Seed:
    orders: list[tuple[Any, ...]]  # order_id, customer_id, status, paid_amount, created_at
    payments: list[tuple[datetime, Decimal]]


def seed(conn: Conn, rng: random.Random, n_orders: int = 60, prefix: str = "o") -> Seed:
    """Orders in every status and order_paid events in several time zones, inserted with SQL."""
    orders, payments = [], []
    for i in range(n_orders):
        status = rng.choice(STATUSES)
        created = T0 + timedelta(minutes=rng.randrange(0, 600))
        was_paid = status in ("paid", "shipped") or (status == "cancelled" and rng.random() < 0.5)
        paid = Decimal(rng.randrange(100, 50_000)) / 100 if was_paid else None
        orders.append((f"{prefix}{i}", f"c{rng.randrange(8)}", status, paid, created))
        if paid is not None:
            tz = timezone(timedelta(hours=rng.choice((-5, 0, 2, 9))))
            payments.append(((created + timedelta(minutes=rng.randrange(90))).astimezone(tz), paid))
    with conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO orders (order_id, customer_id, status, paid_amount, created_at,"
            " updated_at, src_topic, src_partition, last_offset)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'orders', 0, 0)",
            [(*o, o[4]) for o in orders],
        )
        conn.cursor().executemany(
            "INSERT INTO order_events (src_topic, src_partition, src_offset, order_id, type,"
            " event_ts, payload) VALUES ('orders', 1, %s, %s, %s, %s, %s)",
            [
                (i, f"{prefix}{i}", "order_paid", ts, Jsonb({"amount": str(amount)}))
                for i, (ts, amount) in enumerate(payments)
            ]
            + [(10_000, "x", "order_created", T0, Jsonb({"amount": "999"}))],
        )
    return Seed(orders, payments)


def expected_customer_totals(s: Seed) -> list[tuple[Any, ...]]:
    by_customer: dict[str, list[tuple[Any, ...]]] = {}
    for order in s.orders:
        by_customer.setdefault(order[1], []).append(order)
    return [
        (
            customer,
            len(rows),
            sum(1 for r in rows if r[2] in ("paid", "shipped")),
            sum((r[3] for r in rows if r[2] != "cancelled" and r[3] is not None), Decimal(0)),
            max(r[4] for r in rows),
        )
        for customer, rows in sorted(by_customer.items())
    ]


def expected_revenue_by_hour(s: Seed) -> list[tuple[Any, ...]]:
    hours: dict[datetime, list[Decimal]] = {}
    for ts, amount in s.payments:
        hour = ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        hours.setdefault(hour, []).append(amount)
    return [(h, len(a), sum(a, Decimal(0))) for h, a in sorted(hours.items())]


def status_counts(s: Seed) -> dict[str, int]:
    return dict(Counter(o[2] for o in s.orders))


def summary(conn: Conn) -> dict[str, int]:
    _, rows = fetch_rows(conn, ORDER_STATUS_COUNTS, None)
    return {status: count for status, count in rows}


def set_offsets(conn: Conn, offsets: dict[tuple[str, int], int | None]) -> None:
    conn.cursor().executemany(
        "INSERT INTO eos_offsets (consumer_group, topic, partition, next_offset)"
        " VALUES ('g', %s, %s, %s) ON CONFLICT (consumer_group, topic, partition)"
        " DO UPDATE SET next_offset = EXCLUDED.next_offset",
        [(t, p, n) for (t, p), n in offsets.items()],
    )


def test_materialized_views_equal_the_expectation(db: Conn) -> None:
    s = seed(db, random.Random(7))
    assert fetch_rows(db, CUSTOMER_ORDER_TOTALS, None)[1] == []  # created before the data
    for view in (CUSTOMER_ORDER_TOTALS, REVENUE_BY_HOUR):
        assert refresh_view(db, view) is not None
    assert fetch_rows(db, CUSTOMER_ORDER_TOTALS, None)[1] == expected_customer_totals(s)
    columns, rows = fetch_rows(db, REVENUE_BY_HOUR, None)
    assert columns == ["hour", "payments", "revenue"]
    assert rows == expected_revenue_by_hour(s)
    assert all(hour.utcoffset() is not None for hour, _, _ in rows)


def test_customer_without_paid_orders_has_zero_revenue(db: Conn) -> None:
    with db.transaction():
        db.execute(
            "INSERT INTO orders (order_id, customer_id, status, paid_amount, created_at,"
            " updated_at, src_topic, src_partition, last_offset) VALUES"
            " ('a', 'lonely', 'created', NULL, now(), now(), 't', 0, 0),"
            " ('b', 'lonely', 'cancelled', 12.50, now(), now(), 't', 0, 1)"
        )
    refresh_view(db, CUSTOMER_ORDER_TOTALS)
    [(_, orders, paid, revenue, _)] = fetch_rows(db, CUSTOMER_ORDER_TOTALS, None)[1]
    assert (orders, paid, revenue) == (2, 0, Decimal(0))


def test_readers_are_not_blocked_while_a_view_refreshes(database_url: str, db: Conn) -> None:
    seed(db, random.Random(1))
    refresh_view(db, CUSTOMER_ORDER_TOTALS)
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as refresher:
        with snapshot_transaction(refresher):
            assert refresh_in_transaction(refresher, CUSTOMER_ORDER_TOTALS) is not None
            # the refresh's transaction is open, its locks held
            db.execute("SET statement_timeout = '1s'")
            row = db.execute("SELECT count(*) FROM customer_order_totals").fetchone()
            assert row is not None and row[0] > 0
            assert refresh_view(db, CUSTOMER_ORDER_TOTALS) is None  # one refresh at a time
        # a plain REFRESH, by contrast, locks readers out: the check above is meaningful
        with refresher.transaction():
            refresher.execute("REFRESH MATERIALIZED VIEW customer_order_totals")
            with pytest.raises(psycopg.errors.QueryCanceled):
                db.execute("SELECT count(*) FROM customer_order_totals")


def psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def test_watermark_comes_from_the_refresh_snapshot(database_url: str, db: Conn) -> None:
    s = seed(db, random.Random(3))
    set_offsets(db, {("orders", 0): 60, ("orders", 1): None})
    with (
        psycopg.connect(psycopg_url(database_url), autocommit=True) as refresher,
        snapshot_transaction(refresher),
    ):
        refresher.execute("SELECT 1")  # the snapshot is taken here
        with db.transaction():  # a batch commits after it: new order, offsets advance
            db.execute(
                "INSERT INTO orders (order_id, customer_id, status, created_at, updated_at,"
                " src_topic, src_partition, last_offset)"
                " VALUES ('late', 'c0', 'created', now(), now(), 'orders', 0, 60)"
            )
            set_offsets(db, {("orders", 0): 61})
        result = refresh_in_transaction(refresher, CUSTOMER_ORDER_TOTALS)
    assert result is not None
    assert [(o.topic, o.partition, o.next_offset) for o in result.offsets] == [
        ("orders", 0, 60),
        ("orders", 1, None),
    ]
    assert fetch_rows(db, CUSTOMER_ORDER_TOTALS, None)[1] == expected_customer_totals(s)
    row = db.execute(
        "SELECT offsets, refreshes, duration_ms >= 0, refreshed_at <= now()"
        " FROM eos_view_refreshes WHERE view_name = 'customer_order_totals'"
    ).fetchone()
    assert row is not None
    assert row[0] == [
        {"group": "g", "topic": "orders", "partition": 0, "next_offset": 60},
        {"group": "g", "topic": "orders", "partition": 1, "next_offset": None},
    ]
    assert row[1:] == (1, True, True)
    assert read_offsets(db)[0].next_offset == 61


def test_rebuild_repairs_a_corrupted_summary(db: Conn) -> None:
    s = seed(db, random.Random(5))
    set_offsets(db, {("orders", 0): 42})
    db.execute("DELETE FROM order_status_count_shards")
    db.execute(
        "INSERT INTO order_status_count_shards VALUES"
        " ('paid', 0, 999), ('bogus', 1, 3), ('created', 2, 0), ('created', 3, 5)"
    )
    result = rebuild_view(db, ORDER_STATUS_COUNTS)
    assert summary(db) == status_counts(s)
    shards = db.execute("SELECT DISTINCT shard FROM order_status_count_shards").fetchall()
    assert shards == [(0,)]  # a rebuild puts every key in shard 0
    assert [o.next_offset for o in result.offsets] == [42]


def test_apply_adds_preaggregated_deltas_in_one_statement(db: Conn) -> None:
    with db.transaction():
        changed = ORDER_STATUS_COUNTS.apply(
            db,
            [
                (("created", 0), (1,)),
                (("created", 0), (1,)),
                (("created", 0), (-1,)),
                (("paid", 0), (1,)),
                (("paid", 1), (1,)),
                (("shipped", 0), (1,)),
                (("shipped", 0), (-1,)),
            ],
        )
    assert changed == 3
    with db.transaction():
        ORDER_STATUS_COUNTS.apply(db, [(("created", 1), (-1,)), (("paid", 2), (1,))])
        assert ORDER_STATUS_COUNTS.apply(db, []) == 0
    # The view sums the shards; 'created' sums to 0 (1 in shard 0, -1 in shard 1): "none".
    assert summary(db) == {"paid": 3}
    assert db.execute("SELECT * FROM order_status_counts ORDER BY status").fetchall() == [
        ("paid", 3)
    ]
    shards = db.execute(
        "SELECT shard, orders FROM order_status_count_shards WHERE status = 'created'"
        " ORDER BY shard"
    ).fetchall()
    assert shards == [(0, 1), (1, -1)]


def test_batches_of_other_shards_do_not_wait_for_each_other(db: Conn, database_url: str) -> None:
    """A batch's status counts stay locked until it commits: another batch adding to the same
    shard waits; one adding to its own shard goes straight through."""
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as other:
        other.execute("SET lock_timeout = '500ms'")
        with db.transaction():
            ORDER_STATUS_COUNTS.apply(db, [(("created", 0), (1,)), (("paid", 0), (1,))])
            with other.transaction():
                ORDER_STATUS_COUNTS.apply(other, [(("created", 1), (1,)), (("paid", 1), (1,))])
            with pytest.raises(psycopg.errors.LockNotAvailable), other.transaction():
                ORDER_STATUS_COUNTS.apply(other, [(("created", 0), (1,))])
    assert summary(db) == {"created": 2, "paid": 2}


def test_a_missing_view_is_a_view_error(db: Conn) -> None:
    ghost = MaterializedView("ghost", "SELECT 1 AS a", ("a",))
    with pytest.raises(ViewError, match="ghost is not in the database"):
        refresh_view(db, ghost)
    with pytest.raises(ViewError, match='show of ghost: relation "ghost" does not exist'):
        fetch_rows(db, ghost, 1)


def test_user_views_use_the_same_migration_helpers(database_url: str, db: Conn) -> None:
    mine = MaterializedView(
        "customer_labels",
        "SELECT customer_id, 'label:' || customer_id AS label FROM orders GROUP BY customer_id",
        ("customer_id",),
    )
    s = seed(db, random.Random(9))
    engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
            create_view_op(mine)
        rows = fetch_rows(db, mine, None)[1]
        assert rows == [(c, f"label:{c}") for c in sorted({o[1] for o in s.orders})]
        assert refresh_view(db, mine) is not None
        with engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
            drop_view_op(mine)
    finally:
        engine.dispose()
    gone = db.execute(
        "SELECT to_regclass('customer_labels'),"
        " (SELECT count(*) FROM eos_view_refreshes WHERE view_name = 'customer_labels')"
    ).fetchone()
    assert gone == (None, 0)
