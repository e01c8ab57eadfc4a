"""Users' feedback state (dismissals, impression counts) in the Store, over SQLite and
PostgreSQL: round trips, the migration that adds it, and restores that never read it."""

from __future__ import annotations

from sqlalchemy import inspect, text
from test_store import _migrate_to

from streamrec.core.events import Event
from streamrec.core.history import MAX_IMPRESSED, UserState
from streamrec.state.batch import AppliedEvent, BatchWrite
from streamrec.state.store import Store

TOPIC = "events"
WITH_FEEDBACK = UserState(
    history=("a", "b"),
    purchased=("b",),
    n_events=2,
    last_ts=1_700_000_000_123,
    dismissed=("ítem-✓", 'q"\\'),
    impressions=(("c", 1), ("ítem-2", 7)),
)


def _batch(gen: int, **kw: object) -> BatchWrite:
    return BatchWrite(topic=TOPIC, generations={0: gen}, next_offsets={0: 10}, **kw)  # type: ignore[arg-type]


def test_feedback_round_trips_and_updates(store: Store) -> None:
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    store.commit_batch(_batch(gen, users={"u1": WITH_FEEDBACK}))
    read = store.load_users(["u1"])
    assert read == {"u1": WITH_FEEDBACK}
    many = UserState(
        history=("a",),
        impressions=tuple((f"i{n}", n + 1) for n in range(MAX_IMPRESSED)),
        dismissed=tuple(f"d{n}" for n in range(1000)),
    )
    store.commit_batch(_batch(gen, users={"u1": many}, user_versions=read.versions))
    assert store.all_users() == {"u1": many}


def test_feedback_events_are_deduplicated_but_never_restored(store: Store) -> None:
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    events = [
        Event("c1", "u1", "i1", "click", 5),
        Event("s1", "u1", "i2", "impression", 6, "rec-1"),
        Event("d1", "u1", "i3", "dismiss", 7),
        Event("p1", "u1", "i4", "purchase", 8),
    ]
    applied = [AppliedEvent(e, 0, n) for n, e in enumerate(events)]
    store.commit_batch(_batch(gen, applied=applied))
    assert store.applied(["c1", "s1", "d1", "p1", "x"]) == {"c1", "s1", "d1", "p1"}
    assert store.recent_events(0, 0, 10) == [(0, events[0]), (3, events[3])]
    assert store.recent_events(0, 0, 1) == [(3, events[3])]  # the limit counts interactions


def test_migration_0005_gives_existing_users_empty_feedback(db_url: str) -> None:
    _migrate_to(db_url, "0004")
    insert_old = text(  # as a worker of revision 0004 writes a user
        "INSERT INTO users (user_id, history, purchased, n_events, last_ts) "
        """VALUES (:u, '["a"]', '[]', 1, 5)"""
    )
    with Store(db_url, group_id="g1") as store:
        with store.engine.begin() as conn:
            conn.execute(insert_old, {"u": "u1"})
        store.migrate()
        read = store.load_users(["u1"])
        assert read == {"u1": UserState(history=("a",), n_events=1, last_ts=5)}
        gen = store.claim_partitions(TOPIC, [0])[0][0]
        store.commit_batch(_batch(gen, users={"u1": WITH_FEEDBACK}, user_versions=read.versions))
        with store.engine.begin() as conn:  # an older worker still inserting during a rollout
            conn.execute(insert_old, {"u": "u2"})
        assert store.all_users() == {
            "u1": WITH_FEEDBACK,
            "u2": UserState(history=("a",), n_events=1, last_ts=5),
        }
    _migrate_to(db_url, "0004", downgrade=True)
    with Store(db_url) as store:
        columns = {c["name"] for c in inspect(store.engine).get_columns("users")}
        assert not {"dismissed", "impressions"} & columns
        store.migrate()
        back = store.all_users()["u1"]
        assert (back.history, back.dismissed, back.impressions) == (("a", "b"), (), ())
