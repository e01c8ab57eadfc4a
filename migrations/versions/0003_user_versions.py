"""Users carry a version: optimistic locking of user state under concurrent writers.

Every update of a user row is guarded by the version its batch read (``WHERE version = ...``)
and bumps it by one, so two workers folding the same user from the same read cannot both
commit, whatever the partitioning. Existing rows start at version 0.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NOT NULL with a constant default: a plain ALTER TABLE ADD COLUMN on SQLite, and no table
    # rewrite on PostgreSQL (11 and later); the default also keeps inserts that do not name
    # the column (a worker still on 0002 during a rolling deploy) valid.
    op.add_column(
        "users",
        sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:  # SQLite rebuilds the table
        batch.drop_column("version")
