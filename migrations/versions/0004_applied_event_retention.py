"""Applied events carry the time they were applied, indexed: the retention window prunes by it.

``applied_events`` is the dedupe table: it is kept for ``applied_events_retention_hours``
(longer than the broker's retention of the input topic), and the worker deletes older rows
in small chunks (``streamrec.state.retention``). The time is the worker's wall clock at the
commit, not the event's own ``ts``: a producer's clock may be far behind, and the broker
retains a record for its retention counted from when it was written, which is never after the
worker applied it.

Rows applied before this revision get the time of the upgrade (one ``UPDATE``; on PostgreSQL
it rewrites every row once), so they are kept one full window from now. The column stays
nullable: a worker still on 0003 during a rolling deploy inserts NULL, and such rows are never
pruned (a handful; delete them by hand if they matter).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

INDEX = "ix_applied_events_applied_at_ms"


def upgrade() -> None:
    op.add_column("applied_events", sa.Column("applied_at_ms", sa.BigInteger, nullable=True))
    now_ms = int(time.time() * 1000)
    op.execute(
        sa.text(
            "UPDATE applied_events SET applied_at_ms = :now WHERE applied_at_ms IS NULL"
        ).bindparams(now=now_ms)
    )
    op.create_index(INDEX, "applied_events", ["applied_at_ms"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="applied_events")
    with op.batch_alter_table("applied_events") as batch:  # SQLite rebuilds the table
        batch.drop_column("applied_at_ms")
