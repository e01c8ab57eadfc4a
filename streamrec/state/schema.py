"""The database tables (SQLAlchemy Core): the schema of the latest Alembic revision.

``migrations/versions/`` creates and alters them; this module mirrors the result for queries
(``streamrec.state.store``) and for Alembic's metadata. Change both together.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

ID = String(256)
metadata = MetaData()

# ``version`` (revision 0003) is the optimistic lock: every update of a row is guarded by the
# version its batch read and bumps it by one; rows start at 0.
users = Table(
    "users",
    metadata,
    Column("user_id", ID, primary_key=True),
    Column("history", Text, nullable=False),
    Column("purchased", Text, nullable=False),
    Column("n_events", Integer, nullable=False),
    Column("last_ts", BigInteger, nullable=False),
    Column("version", Integer, nullable=False, server_default=text("0")),
)
# One row per applied event: the dedupe key, and (since revision 0002) the event itself, which
# the worker reads back to restore its in-memory stream state. Rows written before 0002 have
# NULL item_id, type and ts and are skipped by restores. ``applied_at_ms`` (revision 0004, the
# worker's wall clock at the commit) is what the retention window prunes by
# (``streamrec.state.retention``); NULL only in rows a pre-0004 worker wrote, never pruned.
applied_events = Table(
    "applied_events",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("user_id", ID, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("item_id", ID, nullable=True),
    Column("type", String(32), nullable=True),
    Column("ts", BigInteger, nullable=True),  # event time, epoch ms
    Column("applied_at_ms", BigInteger, nullable=True),  # commit time, epoch ms
    Index("ix_applied_events_partition_offset", "partition", "offset"),
    Index("ix_applied_events_applied_at_ms", "applied_at_ms"),
)
partition_offsets = Table(
    "partition_offsets",
    metadata,
    Column("group_id", ID, primary_key=True),
    Column("topic", ID, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=True),
    Column("generation", Integer, nullable=False),
)
outbox = Table(
    "outbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("topic", ID, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("key", LargeBinary, nullable=True),
    Column("value", LargeBinary, nullable=True),
    Column("headers", Text, nullable=False),
    Column("event_ts_ms", BigInteger, nullable=False),
    sqlite_autoincrement=True,  # ids never reused: relays delete by id
)
