"""eos_done_offsets: records committed above a partition's next_offset (`run --order key`).

With per-key parallelism a partition's records commit out of offset order. Each batch records
the offsets it handled here, in its own transaction; the partition's next_offset then moves up
to the highest offset below which everything is done, and these rows below it are deleted.
On restart the rows above next_offset say which records are already done.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eos_done_offsets",
        sa.Column("consumer_group", sa.Text, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("src_offset", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("consumer_group", "topic", "partition", "src_offset"),
    )


def downgrade() -> None:
    op.drop_table("eos_done_offsets")
