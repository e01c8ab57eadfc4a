"""State in a SQL database (SQLite by default, PostgreSQL in production).

Exactly-once state comes from here, not from Kafka: one transaction per batch writes the users'
new states, the applied events (their ids dedupe; item, type and time restore the fused
ranking's stream state, ``recent_events``), the output messages (outbox) and the next offsets
of the batch's partitions. The offset write is guarded by the partition's generation, which
every new owner bumps when it is assigned the partition (one atomic ``UPDATE ... SET
generation = generation + 1 ... RETURNING`` per partition, so two claimants never share a
generation): a worker that lost the partition fails its transaction with ``FencedError`` and
writes nothing. User rows are guarded by their ``version`` (optimistic locking): a batch
updates a user only if the row still has the version the batch read, and inserts a user only
if no row exists; otherwise (or on any other duplicate key: an event id applied meanwhile) the
transaction fails with ``ConflictError`` and writes nothing, whatever the partitioning. The
tables are in ``streamrec.state.schema``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Integer,
    bindparam,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    literal,
    null,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.sql.expression import Executable

from streamrec.core.events import EVENT_TYPES, Event
from streamrec.core.history import UserState
from streamrec.errors import ConflictError, FencedError, StoreError
from streamrec.state.batch import AppliedEvent, BatchWrite, OutboxMessage, UserStates
from streamrec.state.schema import ID, applied_events, outbox, partition_offsets, users

# An update of a user row: only from the version the batch read, and bumping it.
_UPDATE_USER = (
    update(users)
    .where((users.c.user_id == bindparam("uid")) & (users.c.version == bindparam("read_version")))
    .values(
        history=bindparam("history"),
        purchased=bindparam("purchased"),
        n_events=bindparam("n_events"),
        last_ts=bindparam("last_ts"),
        version=users.c.version + 1,
    )
)
# SQLSTATEs of a transaction the server aborted because it raced another one (PostgreSQL):
# serialization failure, deadlock detected. Retrying the batch is the remedy.
_RACE_SQLSTATES = frozenset({"40001", "40P01"})


def _migrations_dir() -> Path:
    """The Alembic scripts: the repository's migrations/, or the copy an install ships."""
    source = Path(__file__).resolve().parents[2] / "migrations"
    if (source / "env.py").is_file():
        return source
    return Path(sys.prefix) / "share" / "streamrec" / "migrations"


MIGRATIONS_DIR = _migrations_dir()


def _encode_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    return json.dumps([[k, v.decode("latin-1")] for k, v in headers])


def _decode_headers(text: str) -> tuple[tuple[str, bytes], ...]:
    return tuple((k, v.encode("latin-1")) for k, v in json.loads(text))


def _user_values(st: UserState) -> dict[str, Any]:
    return {
        "history": json.dumps(list(st.history)),
        "purchased": json.dumps(list(st.purchased)),
        "n_events": st.n_events,
        "last_ts": st.last_ts,
    }


def make_engine(url: str, timeout_ms: int = 2000) -> Engine:
    """Create an engine whose calls wait at most about ``timeout_ms``.

    SQLite gets WAL mode and a busy timeout; PostgreSQL a connect timeout (whole seconds, as
    libpq counts them) and a statement timeout, so a slow or unreachable server fails fast and
    the worker pauses and retries on its own instead of missing its poll deadline.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": timeout_ms / 1000})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if url.startswith("postgresql"):
        connect_args = {
            "connect_timeout": max(1, math.ceil(timeout_ms / 1000)),
            "options": f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}",
        }
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    return create_engine(url, pool_pre_ping=True)


class Store:
    """The worker's database: users, applied event ids, offsets with generations, outbox.

    Args:
        url: SQLAlchemy database URL.
        group_id: the consumer group whose offsets and generations this store keeps.
        timeout_ms: longest wait of one database call (``make_engine``).
        clock: seconds since the epoch; stamps applied events (``applied_at_ms``), which the
            retention window prunes by.
    """

    def __init__(
        self,
        url: str,
        group_id: str = "streamrec",
        timeout_ms: int = 2000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.group_id = group_id
        self.clock = clock
        try:
            self.engine = make_engine(url, timeout_ms)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open database: {type(exc).__name__}") from exc

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()

    def migrate(self) -> None:
        """Bring the schema to the latest Alembic revision (idempotent)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":  # a migration may take long: no limit
                    conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
                    conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except SQLAlchemyError as exc:
            raise StoreError(f"migration failed: {type(exc).__name__}") from exc

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
            return True
        except SQLAlchemyError:
            return False

    def claim_partitions(
        self, topic: str, partitions: Iterable[int]
    ) -> dict[int, tuple[int, int | None]]:
        """Take ownership of partitions: bump their generations, atomically.

        Per partition, a row is inserted at generation 0 unless one exists (an insert that
        cannot fail on a concurrent twin), then ``generation = generation + 1`` is updated and
        returned by the same statement; the database serializes the updates of a row, so
        concurrent claimants (threads, processes, workers) always get distinct generations.
        All partitions are claimed in one transaction, in partition order.

        Returns:
            partition -> (our generation, stored next offset or None when never written).
        """
        out: dict[int, tuple[int, int | None]] = {}
        try:
            with self.engine.begin() as conn:
                for p in sorted(set(partitions)):
                    out[p] = self._claim_one(conn, topic, p)
        except SQLAlchemyError as exc:
            raise StoreError(f"claiming partitions failed: {type(exc).__name__}") from exc
        return out

    def _claim_one(self, conn: Connection, topic: str, partition: int) -> tuple[int, int | None]:
        key = partition_offsets.c
        where = (
            (key.group_id == self.group_id) & (key.topic == topic) & (key.partition == partition)
        )
        conn.execute(_insert_offsets_row(conn.dialect.name, self.group_id, topic, partition))
        bump = update(partition_offsets).where(where).values(generation=key.generation + 1)
        if conn.dialect.update_returning:
            row = conn.execute(bump.returning(key.generation, key.next_offset)).one()
        else:  # the UPDATE holds the row's write lock until commit: this read is still ours
            conn.execute(bump)
            row = conn.execute(select(key.generation, key.next_offset).where(where)).one()
        return int(row[0]), None if row[1] is None else int(row[1])

    def load_users(self, user_ids: Iterable[str]) -> UserStates:
        """Current states of the given users (absent users are left out).

        Returns:
            user -> state, a dict whose ``versions`` maps each user to its row's version (the
            guard of the batch that writes the new state: ``BatchWrite.user_versions``).
        """
        ids = sorted(set(user_ids))
        out = UserStates()
        try:
            with self.engine.connect() as conn:
                for chunk in _chunks(ids, 500):
                    for row in conn.execute(select(users).where(users.c.user_id.in_(chunk))):
                        out[row.user_id] = _user_state(row)
                        out.versions[row.user_id] = int(row.version)
        except SQLAlchemyError as exc:
            raise StoreError(f"loading users failed: {type(exc).__name__}") from exc
        return out

    def applied(self, event_ids: Iterable[str]) -> set[str]:
        """Which of these event ids were already applied."""
        ids = sorted(set(event_ids))
        found: set[str] = set()
        try:
            with self.engine.connect() as conn:
                for chunk in _chunks(ids, 500):
                    q = select(applied_events.c.event_id).where(
                        applied_events.c.event_id.in_(chunk)
                    )
                    found.update(conn.execute(q).scalars())
        except SQLAlchemyError as exc:
            raise StoreError(f"dedupe lookup failed: {type(exc).__name__}") from exc
        return found

    def commit_batch(self, batch: BatchWrite) -> list[OutboxMessage]:
        """Write a batch in one transaction; return its outbox messages with their ids.

        The users in ``batch.user_versions`` are updated, each only from the version read
        (and bumped by one); the other users of the batch are inserted as new, at version 0.

        Raises:
            FencedError: only when a partition's generation-guarded offset update matched no
                row: the partition has a newer owner (or was never claimed). Drop it; nothing
                was written.
            ConflictError: the batch raced another writer: a user row changed since it was
                read, a new user's row exists, an event id was applied meanwhile (any other
                integrity error), or the server aborted the transaction as a deadlock or a
                serialization failure. Re-read and rebuild the batch, then retry; nothing was
                written.
            StoreError: the database failed; nothing was written.
            ValueError: ``batch.existing_users`` names users without a read version.
        """
        unversioned = batch.existing_users - batch.user_versions.keys()
        if unversioned:
            raise ValueError(
                f"{len(unversioned)} existing users have no read version in user_versions"
            )
        key = partition_offsets.c
        stored: list[OutboxMessage] = []
        try:
            with self.engine.begin() as conn:
                for p, nxt in sorted(batch.next_offsets.items()):
                    res = conn.execute(
                        update(partition_offsets)
                        .where(
                            (key.group_id == self.group_id)
                            & (key.topic == batch.topic)
                            & (key.partition == p)
                            & (key.generation == batch.generations[p])
                        )
                        .values(next_offset=nxt)
                    )
                    if res.rowcount != 1:
                        raise FencedError(f"partition {batch.topic}[{p}] has a newer owner")
                if batch.applied:
                    now_ms = int(self.clock() * 1000)
                    conn.execute(
                        insert(applied_events),
                        [_applied_row(a, now_ms) for a in batch.applied],
                    )
                # in user order: concurrent batches lock shared rows in the same order
                written = sorted(batch.users.items())
                read = batch.user_versions
                new = [
                    {"user_id": u, **_user_values(s), "version": 0}
                    for u, s in written
                    if u not in read
                ]
                old = [
                    {"uid": u, "read_version": read[u], **_user_values(s)}
                    for u, s in written
                    if u in read
                ]
                if old:
                    res = conn.execute(_UPDATE_USER, old)
                    if res.rowcount != len(old):
                        raise ConflictError(
                            f"{len(old) - res.rowcount} of {len(old)} users changed since read"
                        )
                if new:
                    conn.execute(insert(users), new)
                if batch.messages:
                    ids = conn.execute(
                        insert(outbox).returning(outbox.c.id, sort_by_parameter_order=True),
                        [_outbox_row(m) for m in batch.messages],
                    ).scalars()
                    stored = [_with_id(m, int(i)) for m, i in zip(batch.messages, ids, strict=True)]
        except StoreError:  # FencedError, ConflictError: raised above, rolled back
            raise
        except IntegrityError as exc:  # a duplicate key: written by another writer meanwhile
            raise ConflictError(f"concurrent write detected: {type(exc.orig).__name__}") from exc
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) in _RACE_SQLSTATES:
                raise ConflictError(f"transaction aborted: {type(exc.orig).__name__}") from exc
            raise StoreError(f"batch commit failed: {type(exc).__name__}") from exc
        except (SQLAlchemyError, OverflowError) as exc:
            raise StoreError(f"batch commit failed: {type(exc).__name__}") from exc
        return stored

    def pending_outbox(
        self, partitions: Iterable[int] | None = None, limit: int = 1000, after_id: int = 0
    ) -> list[OutboxMessage]:
        """Outbox messages not yet acknowledged, oldest first (ids above ``after_id``)."""
        q = select(outbox).where(outbox.c.id > after_id).order_by(outbox.c.id).limit(limit)
        if partitions is not None:
            q = q.where(outbox.c.partition.in_(sorted(set(partitions))))
        try:
            with self.engine.connect() as conn:
                return [
                    OutboxMessage(
                        topic=r.topic,
                        partition=r.partition,
                        key=r.key,
                        value=r.value,
                        headers=_decode_headers(r.headers),
                        event_ts_ms=r.event_ts_ms,
                        id=r.id,
                    )
                    for r in conn.execute(q)
                ]
        except SQLAlchemyError as exc:
            raise StoreError(f"reading the outbox failed: {type(exc).__name__}") from exc

    def count_outbox(self) -> int:
        """Rows in the outbox table (every partition): outputs committed, not yet delivered."""
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(outbox)).scalar() or 0)
        except SQLAlchemyError as exc:
            raise StoreError(f"counting the outbox failed: {type(exc).__name__}") from exc

    def delete_outbox(self, ids: Iterable[int]) -> None:
        """Forget messages the broker acknowledged."""
        id_list = sorted(set(ids))
        try:
            with self.engine.begin() as conn:
                for chunk in _chunks(id_list, 500):
                    conn.execute(delete(outbox).where(outbox.c.id.in_(chunk)))
        except SQLAlchemyError as exc:
            raise StoreError(f"clearing the outbox failed: {type(exc).__name__}") from exc

    def recent_events(
        self, partition: int, from_offset: int, limit: int
    ) -> list[tuple[int, Event]]:
        """The latest ``limit`` applied events of a partition at or after ``from_offset``.

        Rows applied before revision 0002 (without item, type and time) are skipped. Applied
        events carry no topic: one database serves one events topic.

        Returns:
            ``(offset, event)`` pairs in offset order.
        """
        if limit <= 0:
            return []
        c = applied_events.c
        q = (
            select(c.offset, c.event_id, c.user_id, c.item_id, c.type, c.ts)
            .where(
                (c.partition == partition)
                & (c.offset >= from_offset)
                & c.item_id.is_not(None)
                & c.type.in_(EVENT_TYPES)
                & c.ts.is_not(None)
            )
            .order_by(c.offset.desc())
            .limit(limit)
        )
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(q).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"reading recent events failed: {type(exc).__name__}") from exc
        return [(int(r[0]), Event(r[1], r[2], r[3], r[4], int(r[5]))) for r in reversed(rows)]

    def prune_applied_events(self, before_ms: int, limit: int) -> int:
        """Delete at most ``limit`` applied events committed before ``before_ms``, oldest first.

        One short transaction (an index range scan on ``applied_at_ms``), so a caller bounds
        its time by ``limit``; rows without a commit time (written before revision 0004 by an
        older worker) are never deleted. Their event ids are no longer deduplicated.

        Returns:
            the number of rows deleted (``limit`` means more may be due).
        """
        if limit <= 0:
            return 0
        c = applied_events.c
        due = (
            select(c.event_id)
            .where(c.applied_at_ms < before_ms)
            .order_by(c.applied_at_ms)
            .limit(limit)
        )
        try:
            with self.engine.begin() as conn:
                res = conn.execute(
                    delete(applied_events).where(c.event_id.in_(due.scalar_subquery()))
                )
        except SQLAlchemyError as exc:
            raise StoreError(f"pruning applied events failed: {type(exc).__name__}") from exc
        return int(res.rowcount)

    def all_users(self) -> dict[str, UserState]:
        """Every user's state (for tests, replay checks and small deployments)."""
        try:
            with self.engine.connect() as conn:
                return {r.user_id: _user_state(r) for r in conn.execute(select(users))}
        except SQLAlchemyError as exc:
            raise StoreError(f"reading users failed: {type(exc).__name__}") from exc


def _insert_offsets_row(dialect: str, group_id: str, topic: str, partition: int) -> Executable:
    """Insert a partition's offsets row at generation 0, doing nothing when it exists."""
    row = {
        "group_id": group_id,
        "topic": topic,
        "partition": partition,
        "next_offset": None,
        "generation": 0,
    }
    primary_key = ["group_id", "topic", "partition"]
    if dialect == "postgresql":
        return (
            postgresql.insert(partition_offsets)
            .values(row)
            .on_conflict_do_nothing(index_elements=primary_key)
        )
    if dialect == "sqlite":
        return (
            sqlite.insert(partition_offsets)
            .values(row)
            .on_conflict_do_nothing(index_elements=primary_key)
        )
    # elsewhere, INSERT ... SELECT ... WHERE NOT EXISTS: a concurrent twin can fail on the
    # primary key (a StoreError: the claim is retried), never yield a second row
    key = partition_offsets.c
    absent = ~exists().where(
        (key.group_id == group_id) & (key.topic == topic) & (key.partition == partition)
    )
    values = select(
        literal(group_id, ID),
        literal(topic, ID),
        literal(partition, Integer),
        null(),
        literal(0, Integer),
    ).where(absent)
    return insert(partition_offsets).from_select(list(row), values)


def _user_state(row: Any) -> UserState:
    return UserState(
        history=tuple(json.loads(row.history)),
        purchased=tuple(json.loads(row.purchased)),
        n_events=row.n_events,
        last_ts=row.last_ts,
    )


def _applied_row(applied: AppliedEvent, applied_at_ms: int) -> dict[str, Any]:
    e = applied.event
    return {
        "event_id": e.event_id,
        "user_id": e.user_id,
        "partition": applied.partition,
        "offset": applied.offset,
        "item_id": e.item_id,
        "type": e.type,
        "ts": e.ts,
        "applied_at_ms": applied_at_ms,
    }


def _outbox_row(msg: OutboxMessage) -> dict[str, Any]:
    return {
        "topic": msg.topic,
        "partition": msg.partition,
        "key": msg.key,
        "value": msg.value,
        "headers": _encode_headers(msg.headers),
        "event_ts_ms": msg.event_ts_ms,
    }


def _with_id(msg: OutboxMessage, id_: int) -> OutboxMessage:
    return OutboxMessage(
        topic=msg.topic,
        partition=msg.partition,
        key=msg.key,
        value=msg.value,
        headers=msg.headers,
        event_ts_ms=msg.event_ts_ms,
        id=id_,
    )


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
