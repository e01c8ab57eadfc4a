"""The retention window of ``applied_events``, over SQLite and PostgreSQL.

Inside the window an applied event id is still deduplicated (found by ``applied``, refused by a
commit); past it, its row is pruned, a bounded chunk at a time, oldest first.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, inspect, select, text
from test_store import TOPIC, _ap, _batch, _migrate_to

from streamrec.errors import ConflictError
from streamrec.state.retention import AppliedEventsRetention
from streamrec.state.schema import applied_events
from streamrec.state.store import Store

HOUR_S = 3600.0
T0_S = 1_800_000_000.0  # the wall clock of the first commit


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _rows(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(applied_events)).scalar_one())


@pytest.fixture
def clocked(db_url: str) -> Iterator[tuple[Store, _Clock]]:
    clock = _Clock(T0_S)
    store = Store(db_url, group_id="g1", clock=clock)
    store.migrate()
    yield store, clock
    store.close()


def test_dedupe_holds_inside_the_window_and_ends_past_it(clocked: tuple[Store, _Clock]) -> None:
    store, clock = clocked
    retention = AppliedEventsRetention(store, 192, chunk_rows=100, clock=clock, interval_s=0)
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    store.commit_batch(_batch({0: gen}, applied=[_ap("old", "u1", 0, 1)]))
    clock.now = T0_S + 100 * HOUR_S
    store.commit_batch(_batch({0: gen}, applied=[_ap("young", "u1", 0, 2)]))

    clock.now = T0_S + 191 * HOUR_S  # both inside the window
    assert retention.step() == 0
    assert store.applied(["old", "young"]) == {"old", "young"}
    with pytest.raises(ConflictError):  # re-delivered inside the window: not applied again
        store.commit_batch(_batch({0: gen}, applied=[_ap("old", "u1", 0, 3)]))

    clock.now = T0_S + 193 * HOUR_S  # "old" is past the window, "young" is not
    assert retention.step() == 1
    assert store.applied(["old", "young"]) == {"young"}
    store.commit_batch(_batch({0: gen}, applied=[_ap("old", "u1", 0, 3)]))  # a new event now
    assert store.applied(["old"]) == {"old"}


def test_pruning_goes_in_bounded_chunks_oldest_first(clocked: tuple[Store, _Clock]) -> None:
    store, clock = clocked
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    for n in range(25):
        clock.now = T0_S + n
        store.commit_batch(_batch({0: gen}, applied=[_ap(f"e{n:02d}", "u", 0, n)]))
    # rows committed at T0 + 0..19 s are older than the cutoff, 20..24 are not
    assert store.prune_applied_events(int((T0_S + 20) * 1000), 8) == 8
    assert store.applied([f"e{n:02d}" for n in range(8)]) == set()  # the oldest went first
    assert store.prune_applied_events(int((T0_S + 20) * 1000), 8) == 8
    assert store.prune_applied_events(int((T0_S + 20) * 1000), 8) == 4
    assert store.prune_applied_events(int((T0_S + 20) * 1000), 8) == 0
    assert _rows(store) == 5
    assert store.prune_applied_events(int((T0_S + 99) * 1000), 0) == 0


def test_retention_goes_on_while_chunks_are_full_then_waits(clocked: tuple[Store, _Clock]) -> None:
    store, clock = clocked
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    store.commit_batch(
        _batch({0: gen}, applied=[_ap(f"e{n}", "u", 0, n) for n in range(7)], next_offsets={0: 7})
    )
    pruned: list[int] = []
    retention = AppliedEventsRetention(
        store, 1, chunk_rows=3, clock=clock, interval_s=3600, on_pruned=pruned.append
    )
    clock.now = T0_S + 2 * HOUR_S
    assert [retention.step() for _ in range(4)] == [3, 3, 1, 0]  # the 4th waits the interval
    assert pruned == [3, 3, 1]
    assert _rows(store) == 0


def test_a_chunk_is_well_under_the_poll_deadline(clocked: tuple[Store, _Clock]) -> None:
    """The default chunk (5,000 rows) out of 50,000 expired: one call, far below 3,000 ms."""
    store, _ = clocked
    with store.engine.begin() as conn:
        conn.execute(
            applied_events.insert(),
            [
                {
                    "event_id": f"e{n}",
                    "user_id": "u",
                    "partition": 0,
                    "offset": n,
                    "applied_at_ms": int(T0_S * 1000) + n,
                }
                for n in range(50_000)
            ],
        )
    start = time.perf_counter()
    assert store.prune_applied_events(int(T0_S * 1000) + 60_000, 5000) == 5000
    took_ms = (time.perf_counter() - start) * 1000
    print(f"\npruned 5,000 of 50,000 applied events in {took_ms:.0f} ms")
    assert took_ms < 1000  # a third of max_poll_interval_ms=3000 in the tests


def test_migration_0004_stamps_existing_rows_with_the_upgrade_time(db_url: str) -> None:
    _migrate_to(db_url, "0003")
    with Store(db_url, group_id="g1") as store:
        with store.engine.begin() as conn:  # a row as a 0003 worker wrote it
            conn.execute(
                text(
                    'INSERT INTO applied_events (event_id, user_id, partition, "offset") '
                    "VALUES ('old1', 'u1', 0, 0)"
                )
            )
        before_ms = int(time.time() * 1000)
        store.migrate()
        with store.engine.connect() as conn:
            stamped = conn.execute(select(applied_events.c.applied_at_ms)).scalar_one()
        assert before_ms <= stamped <= int(time.time() * 1000)
        indexes = [i["column_names"] for i in inspect(store.engine).get_indexes("applied_events")]
        assert ["applied_at_ms"] in indexes
        assert store.prune_applied_events(before_ms, 10) == 0  # kept one window from now
        assert store.applied(["old1"]) == {"old1"}
    _migrate_to(db_url, "0003", downgrade=True)
    with Store(db_url) as store:
        columns = {c["name"] for c in inspect(store.engine).get_columns("applied_events")}
        assert "applied_at_ms" not in columns
        assert store.applied(["old1"]) == {"old1"}


def test_the_worker_prunes_with_its_settings_and_counts(clocked: tuple[Store, _Clock]) -> None:
    from streamrec.ops.metrics import Metrics
    from streamrec.ops.settings import Settings
    from streamrec.worker.loop import make_retention

    store, clock = clocked
    metrics = Metrics()
    assert make_retention(Settings(applied_events_retention_hours=0), store, clock, metrics) is None
    settings = Settings(applied_events_retention_hours=2, applied_events_prune_rows=2)
    retention = make_retention(settings, store, clock, metrics)
    assert retention is not None
    gen = store.claim_partitions(TOPIC, [0])[0][0]
    store.commit_batch(_batch({0: gen}, applied=[_ap(f"e{n}", "u", 0, n) for n in range(3)]))
    clock.now = T0_S + 1.9 * HOUR_S
    assert retention.step() == 0  # inside the window
    clock.now = T0_S + 2.1 * HOUR_S
    retention._due = 0.0  # the minute between prunes is not what this test waits for
    assert (retention.step(), retention.step()) == (2, 1)
    assert metrics.applied_events_pruned._value.get() == 3
