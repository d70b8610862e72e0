"""order_status_counts sharded by source partition: a view over order_status_count_shards.

Every batch transaction adds to the status counts, and a row it updated stays locked until it
commits, so with one row per status concurrent batches (workers, processes of one group)
waited for each other's commits. The counts now live once per status and shard (the source
partition of the events that moved them); `order_status_counts` is a plain view summing the
shards, queried as before.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from eos_pipeline.views.builtin import ORDER_STATUS_COUNTS
from eos_pipeline.views.migration import create_view_op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_status_count_shards",
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("orders", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("status", "shard"),
    )
    op.drop_table("order_status_counts")
    create_view_op(ORDER_STATUS_COUNTS)  # filled from `orders`, the summing view created


def downgrade() -> None:
    op.execute("DROP VIEW order_status_counts")
    op.create_table(
        "order_status_counts",
        sa.Column("status", sa.Text, primary_key=True),
        sa.Column("orders", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO order_status_counts (status, orders)"
        " SELECT status, sum(orders) FROM order_status_count_shards GROUP BY status"
    )
    op.drop_table("order_status_count_shards")
