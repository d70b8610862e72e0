"""Views: the refresh watermark table and the built-in views.

eos_view_refreshes holds one row per registered view: its kind and, after each refresh or
rebuild, when it ran (refreshed_at: the start of its transaction, the moment the data reflects),
how long it took and the next offset of every partition in eos_offsets as seen by that same
snapshot.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from eos_pipeline.views.builtin import CUSTOMER_ORDER_TOTALS, REVENUE_BY_HOUR
from eos_pipeline.views.definitions import IncrementalView
from eos_pipeline.views.migration import create_view_op, drop_view_op

# The status counts as this revision created them: one table row per status. Migration 0005
# shards them; this revision keeps its own definition so it runs the same on a new database.
ORDER_STATUS_COUNTS_0003 = IncrementalView(
    name="order_status_counts",
    key_columns=("status",),
    counter_columns=("orders",),
    rebuild_sql="SELECT status, count(*) FROM orders GROUP BY status",
)
VIEWS = (CUSTOMER_ORDER_TOTALS, REVENUE_BY_HOUR, ORDER_STATUS_COUNTS_0003)

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eos_view_refreshes",
        sa.Column("view_name", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True)),
        sa.Column("duration_ms", sa.Float),
        sa.Column("offsets", JSONB),
        sa.Column("refreshes", sa.BigInteger, nullable=False, server_default="0"),
        sa.CheckConstraint(
            "kind in ('materialized', 'incremental')", name="eos_view_refreshes_kind_check"
        ),
    )
    for view in VIEWS:
        create_view_op(view)


def downgrade() -> None:
    for view in reversed(VIEWS):
        drop_view_op(view)
    op.drop_table("eos_view_refreshes")
