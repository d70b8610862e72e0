"""The views that ship with the orders domain; migration 0003 creates them."""

from __future__ import annotations

from .definitions import IncrementalView, MaterializedView, RefreshPolicy, ViewDefinition

CUSTOMER_ORDER_TOTALS = MaterializedView(
    name="customer_order_totals",
    description="per customer: orders, paid orders, revenue (paid, not cancelled), last order",
    sql="""
SELECT customer_id,
       count(*) AS orders,
       count(*) FILTER (WHERE status IN ('paid', 'shipped')) AS paid_orders,
       coalesce(sum(paid_amount) FILTER (WHERE status <> 'cancelled'), 0) AS revenue,
       max(created_at) AS last_order_at
FROM orders
GROUP BY customer_id
""".strip(),
    unique_key=("customer_id",),
    refresh=RefreshPolicy(every_seconds=30, every_batches=50),
)

REVENUE_BY_HOUR = MaterializedView(
    name="revenue_by_hour",
    description="order_paid events per UTC hour: payments and revenue",
    sql="""
SELECT date_trunc('hour', event_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
       count(*) AS payments,
       coalesce(sum((payload->>'amount')::numeric), 0) AS revenue
FROM order_events
WHERE type = 'order_paid'
GROUP BY 1
""".strip(),
    unique_key=("hour",),
    refresh=RefreshPolicy(every_seconds=60),
)

ORDER_STATUS_COUNTS = IncrementalView(
    name="order_status_counts",
    description="orders per status, kept by the pipeline in each batch transaction",
    key_columns=("status",),
    counter_columns=("orders",),
    rebuild_sql="SELECT status, count(*) FROM orders GROUP BY status",
    table="order_status_count_shards",
    shard_column="shard",  # the source partition of the batch's events (migration 0005)
)

BUILTIN_VIEWS: tuple[ViewDefinition, ...] = (
    CUSTOMER_ORDER_TOTALS,
    REVENUE_BY_HOUR,
    ORDER_STATUS_COUNTS,
)
