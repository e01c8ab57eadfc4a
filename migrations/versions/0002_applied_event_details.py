"""Applied events keep item, type and event time, indexed by (partition, offset).

The worker reads a claimed partition's latest applied events back to restore its in-memory
stream state (trending, co-visitation). Rows applied before this revision keep NULLs and are
skipped by restores.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.String(256)
INDEX = "ix_applied_events_partition_offset"


def upgrade() -> None:
    # nullable, no default: a plain ALTER TABLE ADD COLUMN on both SQLite and PostgreSQL
    op.add_column("applied_events", sa.Column("item_id", ID, nullable=True))
    op.add_column("applied_events", sa.Column("type", sa.String(32), nullable=True))
    op.add_column("applied_events", sa.Column("ts", sa.BigInteger, nullable=True))
    op.create_index(INDEX, "applied_events", ["partition", "offset"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="applied_events")
    with op.batch_alter_table("applied_events") as batch:  # SQLite rebuilds the table
        batch.drop_column("ts")
        batch.drop_column("type")
        batch.drop_column("item_id")
