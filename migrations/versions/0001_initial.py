"""Initial schema: users, applied_events, partition_offsets, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(256)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", ID, primary_key=True),
        sa.Column("history", sa.Text, nullable=False),
        sa.Column("purchased", sa.Text, nullable=False),
        sa.Column("n_events", sa.Integer, nullable=False),
        sa.Column("last_ts", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "applied_events",
        sa.Column("event_id", ID, primary_key=True),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "partition_offsets",
        sa.Column("group_id", ID, primary_key=True),
        sa.Column("topic", ID, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=True),
        sa.Column("generation", sa.Integer, nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("topic", ID, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=True),
        sa.Column("value", sa.LargeBinary, nullable=True),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("event_ts_ms", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("partition_offsets")
    op.drop_table("applied_events")
    op.drop_table("users")
