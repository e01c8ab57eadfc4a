"""The Store under racing writers, over SQLite and PostgreSQL.

Claims bump a partition's generation atomically (two claimants never share one); user rows are
guarded by their version, so a batch folded from a stale read, or inserting a user that another
writer inserted meanwhile, fails with ``ConflictError`` and writes nothing, whatever the
partitioning; only a generation mismatch is a ``FencedError``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from sqlalchemy import event, select, text

from streamrec.core.events import Event
from streamrec.core.history import UserState
from streamrec.errors import ConflictError, FencedError, StoreError
from streamrec.state import store as store_module
from streamrec.state.batch import AppliedEvent, BatchWrite, OutboxMessage
from streamrec.state.schema import applied_events, outbox, partition_offsets, users
from streamrec.state.store import Store

TOPIC = "events"
U1 = UserState(history=("a",), n_events=1, last_ts=1)
SEEN_BY_X = UserState(history=("a", "x"), n_events=2, last_ts=2)
SEEN_BY_Y = UserState(history=("a", "y"), n_events=2, last_ts=3)
NEW = UserState(history=("n",), n_events=1, last_ts=4)
TIMEOUT_MS = 15_000  # racing threads wait for each other's locks; never a spurious timeout


def _batch(
    partition: int,
    generation: int,
    offset: int,
    event_id: str,
    user_states: dict[str, UserState],
    versions: dict[str, int],
) -> BatchWrite:
    """One event of ``event_id`` at ``offset``, its users' new states and a message."""
    user_id = next(iter(user_states))
    event = Event(event_id, user_id, "i1", "click", 1_700_000_000_000)
    return BatchWrite(
        topic=TOPIC,
        generations={partition: generation},
        next_offsets={partition: offset + 1},
        users=dict(user_states),
        existing_users=set(versions),
        user_versions=dict(versions),
        applied=[AppliedEvent(event, partition, offset)],
        messages=[OutboxMessage("recs", partition, user_id.encode(), event_id.encode())],
    )


def _everything(store: Store) -> tuple[Any, ...]:
    """Every row of every table (users with versions), in a stable order."""
    with store.engine.connect() as conn:
        return tuple(
            sorted(tuple(r) for r in conn.execute(select(table)))
            for table in (users, applied_events, outbox, partition_offsets)
        )


def _run_together(*calls: Callable[[], object]) -> list[object]:
    """Run the calls in threads released at once; their results or the exceptions raised."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # handed back to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return results


# -- claims ------------------------------------------------------------------------------------


def _race_claims(db_url: str, rounds: int) -> dict[int, list[int]]:
    """Two engines claim partitions 0-2 ``rounds`` times each, at once; the generations got."""
    stores = [Store(db_url, group_id="g1", timeout_ms=TIMEOUT_MS) for _ in range(2)]
    try:

        def claimer(s: Store) -> Callable[[], list[dict[int, tuple[int, int | None]]]]:
            return lambda: [s.claim_partitions(TOPIC, [2, 0, 1]) for _ in range(rounds)]

        results = _run_together(*(claimer(s) for s in stores))
    finally:
        for s in stores:
            s.close()
    got: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for result in results:
        if isinstance(result, BaseException):
            raise result
        for claim in result:  # type: ignore[attr-defined]
            for p, (generation, next_offset) in claim.items():
                assert next_offset is None
                got[p].append(generation)
    return got


def test_concurrent_claims_never_share_a_generation(store: Store, db_url: str) -> None:
    rounds = 60
    got = _race_claims(db_url, rounds)  # the partitions' rows do not exist yet: inserts race
    for generations in got.values():
        assert sorted(generations) == list(range(1, 2 * rounds + 1))
    assert store.claim_partitions(TOPIC, [0]) == {0: (2 * rounds + 1, None)}


def test_claims_without_on_conflict_or_returning_stay_atomic(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The portable path (other dialects): INSERT ... WHERE NOT EXISTS, UPDATE then SELECT."""
    portable = store_module._insert_offsets_row
    monkeypatch.setattr(
        store_module, "_insert_offsets_row", lambda _dialect, *args: portable("other", *args)
    )
    monkeypatch.setattr(store.engine.dialect, "update_returning", False)
    assert store.claim_partitions(TOPIC, [1, 0]) == {0: (1, None), 1: (1, None)}
    assert store.claim_partitions(TOPIC, [0]) == {0: (2, None)}
    store.commit_batch(_batch(0, 2, 41, "e1", {"u1": U1}, {}))
    assert store.claim_partitions(TOPIC, [0, 1]) == {0: (3, 42), 1: (2, None)}
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM partition_offsets")).scalar_one() == 2


# -- optimistic user versions ------------------------------------------------------------------


def _two_workers(store: Store, db_url: str) -> tuple[Store, int, int]:
    """A second store (worker Y) owning partition 1 while ``store`` (worker X) owns 0."""
    other = Store(db_url, group_id="g1", timeout_ms=TIMEOUT_MS)
    gen_x = store.claim_partitions(TOPIC, [0])[0][0]
    gen_y = other.claim_partitions(TOPIC, [1])[1][0]
    return other, gen_x, gen_y


def test_batches_from_the_same_read_second_conflicts_and_writes_nothing(
    store: Store, db_url: str
) -> None:
    """Two workers fold the same user from one read, on different partitions: one wins."""
    other, gen_x, gen_y = _two_workers(store, db_url)
    with other:
        store.commit_batch(_batch(0, gen_x, 0, "e0", {"u1": U1}, {}))
        read_x = store.load_users(["u1"])
        read_y = other.load_users(["u1", "u7"])  # the same read: u1 at version 0, no u7
        assert read_x.versions == read_y.versions == {"u1": 0}
        store.commit_batch(_batch(0, gen_x, 1, "ex", {"u1": SEEN_BY_X}, read_x.versions))
        before = _everything(store)
        late = _batch(1, gen_y, 5, "ey", {"u1": SEEN_BY_Y, "u7": NEW}, read_y.versions)
        with pytest.raises(ConflictError) as info:
            other.commit_batch(late)
        assert not isinstance(info.value, FencedError)
        assert _everything(store) == before  # no user, applied id, outbox row or offset
        assert store.applied(["ey"]) == set()
        assert store.load_users(["u1", "u7"]) == {"u1": SEEN_BY_X}
        # the remedy: re-read, fold again, commit
        again = other.load_users(["u1", "u7"])
        assert again.versions == {"u1": 1}
        other.commit_batch(_batch(1, gen_y, 5, "ey", {"u1": SEEN_BY_Y, "u7": NEW}, again.versions))
        assert store.load_users(["u1", "u7"]).versions == {"u1": 2, "u7": 0}


def test_concurrent_insert_of_the_same_new_user_conflicts(store: Store, db_url: str) -> None:
    other, gen_x, gen_y = _two_workers(store, db_url)
    with other:
        assert store.load_users(["u9"]) == other.load_users(["u9"]) == {}  # new to both
        store.commit_batch(_batch(0, gen_x, 0, "ex", {"u9": SEEN_BY_X}, {}))
        before = _everything(store)
        with pytest.raises(ConflictError) as info:
            other.commit_batch(_batch(1, gen_y, 0, "ey", {"u9": SEEN_BY_Y}, {}))
        assert not isinstance(info.value, FencedError)
        assert _everything(store) == before
        assert store.load_users(["u9"]) == {"u9": SEEN_BY_X}


def test_one_stale_user_among_many_fails_the_whole_batch(store: Store) -> None:
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    store.commit_batch(_batch(0, gen, 0, "e0", {"u1": U1, "u2": U1, "u3": U1}, {}))
    read = store.load_users(["u1", "u2", "u3"])
    store.commit_batch(_batch(0, gen, 1, "e1", {"u2": SEEN_BY_X}, {"u2": read.versions["u2"]}))
    before = _everything(store)
    stale = _batch(
        0, gen, 2, "e2", {"u1": SEEN_BY_Y, "u2": SEEN_BY_Y, "u3": SEEN_BY_Y}, read.versions
    )
    with pytest.raises(ConflictError, match="1 of 3 users"):
        store.commit_batch(stale)
    assert _everything(store) == before


def test_a_fenced_batch_is_fenced_even_when_it_also_conflicts(store: Store) -> None:
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    store.commit_batch(_batch(0, gen, 0, "e0", {"u1": U1}, {}))
    read = store.load_users(["u1"])
    store.commit_batch(_batch(0, gen, 1, "e1", {"u1": SEEN_BY_X}, read.versions))
    store.claim_partitions(TOPIC, [0])  # a new owner
    before = _everything(store)
    with pytest.raises(FencedError):
        store.commit_batch(_batch(0, gen, 2, "e1", {"u1": SEEN_BY_Y}, read.versions))
    assert _everything(store) == before


@pytest.mark.parametrize("kind", ["update", "insert"])
def test_racing_commits_in_threads_exactly_one_wins(store: Store, db_url: str, kind: str) -> None:
    """Both commits really run at once (a barrier), each on its own engine and partition."""
    other, gen_x, gen_y = _two_workers(store, db_url)
    with other:
        for n in range(15):
            user = "u1" if kind == "update" else f"new{n}"
            if kind == "update" and n == 0:
                store.commit_batch(_batch(0, gen_x, 0, "seed", {user: U1}, {}))
            read = store.load_users([user]).versions
            assert other.load_users([user]).versions == read
            x = _batch(0, gen_x, 10 + n, f"x{n}", {user: SEEN_BY_X}, read)
            y = _batch(1, gen_y, 10 + n, f"y{n}", {user: SEEN_BY_Y}, read)
            result_x, result_y = _run_together(
                partial(store.commit_batch, x), partial(other.commit_batch, y)
            )
            outcomes = sorted(type(r).__name__ for r in (result_x, result_y))
            assert outcomes == ["ConflictError", "list"], (result_x, result_y)
            x_won = isinstance(result_x, list)
            assert store.load_users([user]) == {user: SEEN_BY_X if x_won else SEEN_BY_Y}
            assert store.applied([f"x{n}", f"y{n}"]) == {f"x{n}" if x_won else f"y{n}"}
            assert len(store.pending_outbox()) == n + 1 + (kind == "update")  # the seed's too
            expected = read[user] + 1 if kind == "update" else 0
            assert store.load_users([user]).versions == {user: expected}


# -- what is not a conflict --------------------------------------------------------------------


def test_a_lock_timeout_is_a_plain_store_error(store: Store, db_url: str) -> None:
    """Another writer holding a lock past the timeout: the database failed, no conflict."""
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    with Store(db_url, group_id="g1", timeout_ms=200) as impatient:
        holder = store.engine.connect()
        try:
            if holder.dialect.name == "sqlite":
                holder.exec_driver_sql("BEGIN IMMEDIATE")  # the database's write lock
            else:
                holder.begin()
                holder.execute(select(partition_offsets).with_for_update())
            with pytest.raises(StoreError) as info:
                impatient.commit_batch(_batch(0, gen, 0, "e1", {"u1": U1}, {}))
            assert not isinstance(info.value, FencedError | ConflictError)
        finally:
            holder.rollback()
            holder.close()
    assert store.applied(["e1"]) == set()


def test_deadlock_and_serialization_failures_are_conflicts(store: Store) -> None:
    """PostgreSQL aborts one of two racing transactions with SQLSTATE 40P01 or 40001."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLSTATEs of PostgreSQL")
    import psycopg

    gen = store.claim_partitions(TOPIC, [0])[0][0]
    for error in (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):

        def abort(_conn: Any, _cursor: Any, statement: str, *_: Any, error: Any = error) -> None:
            if statement.startswith("INSERT INTO users"):
                raise error("aborted by the test")

        event.listen(store.engine, "before_cursor_execute", abort)
        try:
            with pytest.raises(ConflictError, match=error.__name__):
                store.commit_batch(_batch(0, gen, 0, "e1", {"u1": U1}, {}))
        finally:
            event.remove(store.engine, "before_cursor_execute", abort)
    assert store.applied(["e1"]) == set()
