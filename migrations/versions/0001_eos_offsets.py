"""eos_offsets: each partition's next offset, fenced by a per-partition epoch.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eos_offsets",
        sa.Column("consumer_group", sa.Text, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        # NULL until the first commit: the partition then starts at the explicit reset policy.
        sa.Column("next_offset", sa.BigInteger, nullable=True),
        sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("owner", sa.Text),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("consumer_group", "topic", "partition"),
        sa.CheckConstraint("partition >= 0", name="eos_offsets_partition_check"),
    )


def downgrade() -> None:
    op.drop_table("eos_offsets")
