"""Users carry their feedback: dismissed items and impression counts (JSON lists).

``dismissed`` holds the items the user dismissed (never recommended again), ``impressions``
``[item_id, times shown]`` pairs for items shown since the user last clicked or bought them
(ranking demotes an item shown too often without a click). Both are bounded per user
(``streamrec.core.history``). Existing rows start with empty lists.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = ("dismissed", "impressions")


def upgrade() -> None:
    # NOT NULL with a constant default: a plain ALTER TABLE ADD COLUMN on SQLite, and no table
    # rewrite on PostgreSQL (11 and later); the default also keeps inserts that do not name
    # the columns (a worker of an older revision during a rolling deploy) valid.
    for name in COLUMNS:
        op.add_column(
            "users",
            sa.Column(name, sa.Text, nullable=False, server_default=sa.text("'[]'")),
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:  # SQLite rebuilds the table
        for name in COLUMNS:
            batch.drop_column(name)
