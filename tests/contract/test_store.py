"""The Store contract, run over SQLite and PostgreSQL: atomic batches, fencing, outbox.

Races between writers (claims, user versions, concurrent inserts) are in
``test_concurrency.py``.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, inspect, select, text

from streamrec.core.events import Event
from streamrec.core.history import UserState
from streamrec.errors import BadEvent, ConflictError, FencedError, StoreError
from streamrec.io.codec import decode_event
from streamrec.state.batch import AppliedEvent, BatchWrite, OutboxMessage
from streamrec.state.schema import applied_events, metadata, outbox, users
from streamrec.state.store import MIGRATIONS_DIR, Store

TOPIC = "events"
U1 = UserState(history=("a", "b"), purchased=("b",), n_events=2, last_ts=1_700_000_000_123)
U2 = UserState(history=("z",), purchased=(), n_events=1, last_ts=7)


def _msg(n: int, partition: int = 0, **kw: object) -> OutboxMessage:
    fields: dict[str, object] = {
        "topic": "recs",
        "partition": partition,
        "key": f"u{n}".encode(),
        "value": f'{{"n":{n}}}'.encode(),
        "headers": (("x-n", str(n).encode()),),
        "event_ts_ms": 1000 + n,
    }
    fields.update(kw)
    return OutboxMessage(**fields)  # type: ignore[arg-type]


def _ap(
    event_id: str,
    user_id: str,
    partition: int,
    offset: int,
    item_id: str = "i1",
    kind: str = "click",
    ts: int = 1_700_000_000_000,
) -> AppliedEvent:
    event = Event(event_id, user_id, item_id, kind, ts)  # type: ignore[arg-type]
    return AppliedEvent(event, partition, offset)


def _batch(generations: dict[int, int], **kw: object) -> BatchWrite:
    fields: dict[str, object] = {
        "topic": TOPIC,
        "generations": generations,
        "next_offsets": {p: 10 for p in generations},
    }
    fields.update(kw)
    return BatchWrite(**fields)  # type: ignore[arg-type]


def _counts(store: Store) -> tuple[int, int, int]:
    with store.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (users, applied_events, outbox)
        )


def _snapshot(store: Store) -> tuple[object, ...]:
    return (
        store.all_users(),
        store.applied(["e1", "e2", "e3", "e9"]),
        [(m.id, m.value) for m in store.pending_outbox()],
        _counts(store),
    )


# -- schema -----------------------------------------------------------------------------------


def test_migrate_is_idempotent(store: Store) -> None:
    store.migrate()
    store.migrate()
    tables = set(inspect(store.engine).get_table_names())
    assert {"users", "applied_events", "partition_offsets", "outbox", "alembic_version"} <= tables
    assert _counts(store) == (0, 0, 0)


def test_schema_module_matches_the_latest_migration(store: Store) -> None:
    """``streamrec.state.schema`` mirrors the head revision: autogenerate finds no change."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, metadata) == []


def test_migrate_keeps_data(store: Store) -> None:
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    store.commit_batch(_batch({0: gen}, users={"u1": U1}))
    store.migrate()
    assert store.all_users() == {"u1": U1}


def test_ping(store: Store) -> None:
    assert store.ping() is True


# -- partitions and fencing --------------------------------------------------------------------


def test_claim_partitions_bumps_generation_and_returns_next_offset(store: Store) -> None:
    assert store.claim_partitions(TOPIC, [2, 0]) == {0: (1, None), 2: (1, None)}
    assert store.claim_partitions(TOPIC, [0]) == {0: (2, None)}
    store.commit_batch(_batch({0: 2}, next_offsets={0: 55}))
    assert store.claim_partitions(TOPIC, [0, 2, 3]) == {0: (3, 55), 2: (2, None), 3: (1, None)}


def test_claims_are_per_group_and_topic(store: Store, db_url: str) -> None:
    store.claim_partitions(TOPIC, [0])
    store.claim_partitions(TOPIC, [0])
    assert store.claim_partitions("other-topic", [0]) == {0: (1, None)}
    with Store(db_url, group_id="g2") as other:
        assert other.claim_partitions(TOPIC, [0]) == {0: (1, None)}


def test_commit_batch_writes_everything(store: Store) -> None:
    gens = store.claim_partitions(TOPIC, [0, 1])
    batch = _batch(
        {0: gens[0][0], 1: gens[1][0]},
        next_offsets={0: 12, 1: 40},
        users={"u1": U1, "u2": U2},
        applied=[_ap("e1", "u1", 0, 10), _ap("e2", "u1", 0, 11), _ap("e3", "u2", 1, 39)],
        messages=[_msg(1), _msg(2, partition=1), _msg(3)],
    )
    stored = store.commit_batch(batch)
    assert [m.value for m in stored] == [m.value for m in batch.messages]
    ids = [m.id for m in stored]
    assert all(isinstance(i, int) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert store.all_users() == {"u1": U1, "u2": U2}
    assert store.load_users(["u2", "nobody"]) == {"u2": U2}
    assert store.applied(["e1", "e3", "e4"]) == {"e1", "e3"}
    assert store.pending_outbox() == stored
    assert store.claim_partitions(TOPIC, [0, 1]) == {0: (2, 12), 1: (2, 40)}


def test_commit_updates_existing_users(store: Store) -> None:
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    store.commit_batch(_batch({0: gen}, users={"u1": U1}))
    newer = UserState(history=("a", "b", "c"), purchased=("b", "c"), n_events=3, last_ts=2**62)
    read = store.load_users(["u1", "u2"])
    store.commit_batch(
        _batch(
            {0: gen},
            users={"u1": newer, "u2": U2},
            existing_users=set(read),
            user_versions=read.versions,
        )
    )
    assert store.all_users() == {"u1": newer, "u2": U2}


def test_load_users_returns_row_versions_which_each_update_bumps(store: Store) -> None:
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    store.commit_batch(_batch({0: gen}, users={"u1": U1, "u2": U2}))
    read = store.load_users(["u1", "u2", "ghost"])
    assert read == {"u1": U1, "u2": U2}  # still a plain mapping of states for old callers
    assert read.versions == {"u1": 0, "u2": 0}  # new rows start at 0
    for n in (1, 2):
        read = store.load_users(["u1"])
        store.commit_batch(_batch({0: gen}, users={"u1": U2}, user_versions=read.versions))
        assert store.load_users(["u1", "u2"]).versions == {"u1": n, "u2": 0}
    assert store.load_users([]).versions == {}


def test_existing_users_without_read_versions_are_refused(store: Store) -> None:
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    store.commit_batch(_batch({0: gen}, users={"u1": U1}))
    before = _snapshot(store)
    with pytest.raises(ValueError, match="read version"):
        store.commit_batch(
            _batch({0: gen}, users={"u1": U2}, existing_users={"u1"}, messages=[_msg(1)])
        )
    assert _snapshot(store) == before


def test_stale_generation_is_fenced_and_writes_nothing(store: Store) -> None:
    old = store.claim_partitions(TOPIC, [0, 1])
    store.commit_batch(
        _batch({0: old[0][0], 1: old[1][0]}, users={"u2": U2}, applied=[_ap("e9", "u2", 1, 3)])
    )
    new = store.claim_partitions(TOPIC, [1])  # another worker takes partition 1
    before = _snapshot(store)
    stale = _batch(
        {0: old[0][0], 1: old[1][0]},  # partition 0 is still ours, 1 is not
        next_offsets={0: 77, 1: 88},
        users={"u1": U1},
        applied=[_ap("e1", "u1", 0, 76), _ap("e2", "u1", 1, 87)],
        messages=[_msg(1), _msg(2)],
    )
    with pytest.raises(FencedError):
        store.commit_batch(stale)
    assert _snapshot(store) == before
    assert store.load_users(["u1"]) == {}
    # offsets untouched on both partitions
    assert store.claim_partitions(TOPIC, [0, 1]) == {0: (2, 10), 1: (new[1][0] + 1, 10)}


def test_unclaimed_partition_is_fenced(store: Store) -> None:
    with pytest.raises(FencedError):
        store.commit_batch(_batch({5: 1}, users={"u1": U1}, messages=[_msg(1)]))
    assert _counts(store) == (0, 0, 0)


def test_duplicate_applied_event_writes_nothing(store: Store) -> None:
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    store.commit_batch(_batch({0: gen}, applied=[_ap("e1", "u1", 0, 1)], users={"u1": U1}))
    before = _snapshot(store)
    again = _batch(
        {0: gen},
        next_offsets={0: 99},
        users={"u2": U2},
        applied=[_ap("e2", "u2", 0, 2), _ap("e1", "u1", 0, 1)],
        messages=[_msg(5)],
    )
    with pytest.raises(ConflictError):  # applied by another writer: re-read, not fenced
        store.commit_batch(again)
    assert _snapshot(store) == before
    assert store.applied(["e2"]) == set()
    assert store.claim_partitions(TOPIC, [0])[0][1] == 10


def test_inserting_an_existing_user_as_new_writes_nothing(store: Store) -> None:
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    store.commit_batch(_batch({0: gen}, users={"u1": U1}))
    before = _snapshot(store)
    with pytest.raises(ConflictError):
        store.commit_batch(_batch({0: gen}, users={"u1": U2}, messages=[_msg(1)]))
    assert _snapshot(store) == before
    assert store.claim_partitions(TOPIC, [0])[0][1] == 10


# -- outbox -----------------------------------------------------------------------------------


def test_outbox_order_headers_and_bytes_round_trip(store: Store) -> None:
    gens = store.claim_partitions(TOPIC, [0, 1])
    odd = (
        ("x-bin", b"\xff\xfe\x00\x80 end"),
        ("x-utf8", "héllo ✓".encode()),
        ("x-empty", b""),
        ("x-streamrec-error", b"not_json"),
    )
    msgs = [
        _msg(1, headers=odd, key=None, value=b"\x00\xff\xc3("),
        _msg(2, partition=1, value=None),
        _msg(3, headers=()),
    ]
    store.commit_batch(_batch({0: gens[0][0], 1: gens[1][0]}, messages=msgs[:2]))
    store.commit_batch(_batch({0: gens[0][0]}, messages=msgs[2:]))
    pending = store.pending_outbox()
    assert [m.id for m in pending] == sorted(m.id for m in pending)  # type: ignore[type-var]
    for got, want in zip(pending, msgs, strict=True):
        assert (got.topic, got.partition, got.key, got.value) == (
            want.topic,
            want.partition,
            want.key,
            want.value,
        )
        assert got.headers == want.headers
        assert got.event_ts_ms == want.event_ts_ms
    assert [m.value for m in store.pending_outbox(partitions=[1])] == [None]
    assert [m.event_ts_ms for m in store.pending_outbox(partitions=[0])] == [1001, 1003]
    assert len(store.pending_outbox(limit=2)) == 2
    assert store.pending_outbox(partitions=[]) == []


def test_delete_outbox(store: Store) -> None:
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    stored = store.commit_batch(_batch({0: gen}, messages=[_msg(n) for n in range(5)]))
    store.delete_outbox([stored[1].id, stored[3].id, 10**9])  # type: ignore[list-item]
    assert [m.id for m in store.pending_outbox()] == [stored[i].id for i in (0, 2, 4)]
    store.delete_outbox([])
    store.delete_outbox(m.id for m in stored)  # type: ignore[misc]
    assert store.pending_outbox() == []


def test_outbox_ids_keep_increasing_after_deletes(
    store: Store, db_url: str, request: pytest.FixtureRequest
) -> None:
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    first = store.commit_batch(_batch({0: gen}, messages=[_msg(1), _msg(2)]))
    store.delete_outbox([first[1].id])  # type: ignore[list-item]
    (later,) = store.commit_batch(_batch({0: gen}, messages=[_msg(3)]))
    assert later.id > first[1].id  # type: ignore[operator]


# -- reads ------------------------------------------------------------------------------------


def test_reads_on_an_empty_store(store: Store) -> None:
    assert store.load_users([]) == {}
    assert store.load_users(["u1"]) == {}
    assert store.applied([]) == set()
    assert store.all_users() == {}
    assert store.pending_outbox() == []


def test_reads_beyond_one_chunk(store: Store) -> None:
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    many = {f"u{n}": UserState(history=(f"i{n}",), n_events=1, last_ts=n) for n in range(1203)}
    applied = [_ap(f"e{n}", f"u{n}", 0, n) for n in range(1203)]
    store.commit_batch(_batch({0: gen}, users=many, applied=applied))
    assert store.load_users([*many, "ghost"]) == many
    assert store.applied([f"e{n}" for n in range(0, 1300, 2)]) == {
        f"e{n}" for n in range(0, 1203, 2)
    }


def test_unicode_ids_round_trip(store: Store) -> None:
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    uid = "ü-用户-" + "x" * 240  # 248 characters, under the 256-character column
    state = UserState(history=("ítem-✓", "i\"'\\"), purchased=("ítem-✓",), n_events=2, last_ts=0)
    store.commit_batch(_batch({0: gen}, users={uid: state}, applied=[_ap("é" * 256, uid, 0, 0)]))
    assert store.load_users([uid]) == {uid: state}
    assert store.applied(["é" * 256]) == {"é" * 256}


def test_out_of_range_value_is_a_store_error_and_writes_nothing(
    store: Store, db_url: str, request: pytest.FixtureRequest
) -> None:
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    huge = UserState(history=("a",), n_events=1, last_ts=2**63)
    with pytest.raises(StoreError) as info:
        store.commit_batch(
            _batch(
                {0: gen}, users={"u1": huge}, applied=[_ap("e1", "u1", 0, 0)], messages=[_msg(1)]
            )
        )
    assert not isinstance(info.value, FencedError | ConflictError)
    assert _counts(store) == (0, 0, 0)


# -- applied events read back (stream-state restore) ---------------------------------------------


def test_recent_events_are_the_latest_of_a_partition_in_offset_order(store: Store) -> None:
    gens = store.claim_partitions(TOPIC, [0, 1])
    first = [_ap(f"a{n}", f"u{n % 3}", 0, n, f"i{n}", "click", 1000 + n) for n in range(5)]
    other = [_ap(f"b{n}", "u9", 1, n, "x", "purchase", 7) for n in range(4)]
    store.commit_batch(_batch({0: gens[0][0], 1: gens[1][0]}, applied=[*first, *other]))
    odd = _ap("ü-✓" * 80, "用户-" * 80, 0, 2**40, "ítem-✓" * 40, "purchase", 2**53)
    later = [_ap(f"a{n}", "u1", 0, n, "i", "click", 2000 + n) for n in (7, 6)]  # out of order
    store.commit_batch(_batch({0: gens[0][0]}, applied=[*later, odd]))

    def pairs(applied: list[AppliedEvent]) -> list[tuple[int, Event]]:
        return [(a.offset, a.event) for a in applied]

    assert store.recent_events(0, 0, 100) == pairs([*first, later[1], later[0], odd])
    assert store.recent_events(0, 0, 3) == pairs([later[1], later[0], odd])  # the latest 3
    assert store.recent_events(0, 3, 3) == pairs([later[1], later[0], odd])
    assert store.recent_events(0, 3, 100) == pairs([first[3], first[4], later[1], later[0], odd])
    assert store.recent_events(0, 2**40 + 1, 100) == []
    assert store.recent_events(1, 0, 2) == pairs(other[2:])
    assert store.recent_events(2, 0, 100) == []
    assert store.recent_events(0, 0, 0) == []


def _migrate_to(url: str, revision: str, downgrade: bool = False) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with Store(url) as s, s.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if downgrade else command.upgrade)(cfg, revision)


def test_migration_0002_keeps_old_rows_which_restores_skip(db_url: str) -> None:
    _migrate_to(db_url, "0001")
    with Store(db_url, group_id="g1") as store:
        with store.engine.begin() as conn:  # rows as a 0001 worker wrote them
            conn.execute(
                text(
                    'INSERT INTO applied_events (event_id, user_id, partition, "offset") '
                    "VALUES ('old1', 'u1', 0, 0), ('old2', 'u2', 0, 1)"
                )
            )
        store.migrate()
        columns = {c["name"] for c in inspect(store.engine).get_columns("applied_events")}
        assert {"item_id", "type", "ts"} <= columns
        indexes = inspect(store.engine).get_indexes("applied_events")
        assert ["partition", "offset"] in [i["column_names"] for i in indexes]
        assert store.applied(["old1", "old2"]) == {"old1", "old2"}  # still deduplicated
        assert store.recent_events(0, 0, 10) == []  # NULL item, type and time: skipped
        gen = store.claim_partitions(TOPIC, [0])[0][0]
        new = _ap("new", "u1", 0, 2, "i7", "purchase", 5)
        store.commit_batch(_batch({0: gen}, applied=[new]))
        assert store.recent_events(0, 0, 10) == [(2, new.event)]
    _migrate_to(db_url, "0001", downgrade=True)
    with Store(db_url) as store:
        columns = {c["name"] for c in inspect(store.engine).get_columns("applied_events")}
        assert "item_id" not in columns
        assert store.applied(["old1", "new"]) == {"old1", "new"}
        store.migrate()
        assert store.recent_events(0, 0, 10) == []


def test_migration_0003_gives_existing_users_version_0(db_url: str) -> None:
    _migrate_to(db_url, "0002")
    with Store(db_url, group_id="g1") as store:
        with store.engine.begin() as conn:  # a row as a 0002 worker wrote it
            conn.execute(
                text(
                    "INSERT INTO users (user_id, history, purchased, n_events, last_ts) "
                    """VALUES ('u1', '["a"]', '[]', 1, 5)"""
                )
            )
        store.migrate()
        read = store.load_users(["u1"])
        assert read == {"u1": UserState(history=("a",), n_events=1, last_ts=5)}
        assert read.versions == {"u1": 0}
        gen = store.claim_partitions(TOPIC, [0])[0][0]
        store.commit_batch(_batch({0: gen}, users={"u1": U1}, user_versions=read.versions))
        assert store.load_users(["u1"]).versions == {"u1": 1}
        with pytest.raises(ConflictError):  # the same read again: the row moved on
            store.commit_batch(_batch({0: gen}, users={"u1": U2}, user_versions=read.versions))
        with store.engine.begin() as conn:  # a 0002 worker still inserting during a rollout
            conn.execute(
                text(
                    "INSERT INTO users (user_id, history, purchased, n_events, last_ts) "
                    "VALUES ('u2', '[]', '[]', 0, 0)"
                )
            )
        assert store.load_users(["u2"]).versions == {"u2": 0}
    _migrate_to(db_url, "0002", downgrade=True)
    with Store(db_url) as store:
        columns = {c["name"] for c in inspect(store.engine).get_columns("users")}
        assert "version" not in columns
        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT user_id, n_events FROM users ORDER BY user_id"))
            assert [tuple(r) for r in rows] == [("u1", U1.n_events), ("u2", 0)]
        store.migrate()
        assert store.all_users()["u1"] == U1
        assert store.load_users(["u1", "u2"]).versions == {"u1": 0, "u2": 0}


# -- events the decoder accepts must be storable ------------------------------------------------


def _decode_or_none(raw: bytes) -> Event | None:
    try:
        return decode_event(raw)
    except BadEvent:
        return None


def test_accepted_huge_ts_can_be_committed(store: Store) -> None:
    event = _decode_or_none(
        b'{"event_id":"e1","user_id":"u1","item_id":"i1","type":"click","ts":%d}' % 2**63
    )
    if event is None:
        return  # rejected as a bad event (dead-lettered): fine
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    state = UserState(history=(event.item_id,), n_events=1, last_ts=event.ts)
    store.commit_batch(_batch({0: gen}, users={"u1": state}, applied=[AppliedEvent(event, 0, 0)]))
    assert store.recent_events(0, 0, 10) == [(0, event)]


def test_accepted_nul_in_id_can_be_committed(
    store: Store, db_url: str, request: pytest.FixtureRequest
) -> None:
    event = _decode_or_none(
        b'{"event_id":"e\\u0000","user_id":"u\\u0000","item_id":"i","type":"click","ts":1}'
    )
    if event is None:
        return  # rejected as a bad event (dead-lettered): fine
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    store.commit_batch(
        _batch(
            {0: gen},
            users={event.user_id: UserState(history=("i",), n_events=1, last_ts=1)},
            applied=[AppliedEvent(event, 0, 0)],
        )
    )
    assert store.applied([event.event_id]) == {event.event_id}


# -- an unreachable server ----------------------------------------------------------------------

DOWN = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2"


def test_unreachable_database_pings_false_and_raises_store_error() -> None:
    with Store(DOWN) as down:
        assert down.ping() is False
        with pytest.raises(StoreError) as info:
            down.commit_batch(_batch({0: 1}, users={"u1": U1}, messages=[_msg(1)]))
        assert not isinstance(info.value, FencedError | ConflictError)
        for call in (
            lambda: down.claim_partitions(TOPIC, [0]),
            lambda: down.load_users(["u1"]),
            lambda: down.applied(["e1"]),
            lambda: down.recent_events(0, 0, 10),
            down.pending_outbox,
            lambda: down.delete_outbox([1]),
            down.migrate,
        ):
            with pytest.raises(StoreError):
                call()


def test_unreachable_database_all_users_raises_store_error() -> None:
    with Store(DOWN) as down, pytest.raises(StoreError):
        down.all_users()


def test_bad_url_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        Store("nosuchdialect://x")
