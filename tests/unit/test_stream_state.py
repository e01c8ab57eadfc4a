"""The fused ranker's stream state: counted once per offset, restorable from the database.

``Ranker.restore`` must leave the same state as ``observe`` on each event (trending,
co-visitation, new-item vectors); an offset already observed is never counted again (a batch
re-read after a failed commit, a partition restored twice); ``StateRestore`` works a claimed
partition's restore off in slices, reading a real SQLite store.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrec.core.events import CatalogOp, Event
from streamrec.core.history import EMPTY, UserState
from streamrec.io.codec import encode_event
from streamrec.ops.settings import load_settings
from streamrec.ranking.ranker import Ranker, RankingConfig
from streamrec.state.batch import AppliedEvent, BatchWrite
from streamrec.state.memory import MemoryStateReader
from streamrec.state.restore import StateRestore
from streamrec.state.store import Store
from streamrec.testing import FakeClock, MeanEncoder, random_index
from streamrec.worker.catalog import apply_catalog_op
from streamrec.worker.signals import make_recorder
from streamrec.worker.step import Pipeline, Record

TRAINED = [f"i{n}" for n in range(40)]
NEW = [f"new{n}" for n in range(4)]  # never trained: they get vectors from co-visitation


def _ranker(**overrides: Any) -> Ranker:
    config = RankingConfig(**{"pool": 30, "explore_rate": 0.0, **overrides})
    rec = Ranker(MeanEncoder(dim=8), random_index(40, 8, seed=3), config, trained=TRAINED)
    for item in NEW:  # the catalog knows them (no vector): only then do they get vectors
        op = CatalogOp(item, "upsert", True, 0)
        apply_catalog_op(rec.index, op)
        rec.observe_catalog(op)
    return rec


def _stream(n: int, seed: int = 0) -> list[tuple[int, Event]]:
    """(offset, event) pairs of one partition: 12 users, a skewed catalog, some new items."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        item = rng.choice(NEW) if rng.random() < 0.15 else f"i{min(int(rng.expovariate(0.15)), 39)}"
        kind = "purchase" if rng.random() < 0.2 else "click"
        event = Event(f"e{seed}-{k}", f"u{rng.randrange(12)}", item, kind, 1_700_000_000_000 + k)
        out.append((100 + k, event))
    return out


def _state(rec: Ranker) -> tuple[object, ...]:
    """Everything the stream feeds: trending (order and scores), co-visitation, new vectors."""
    items = [*TRAINED, *NEW]
    covisit = {i: dict(rec.covisit.neighbors(i)) for i in items}
    known = [i for i in NEW if i in rec.index]
    return list(rec.trending.ranked()), covisit, known, rec.index.vectors_of(known).tolist()


def _lists(rec: Ranker) -> list[list[str]]:
    states = [EMPTY, UserState(history=("i1",), n_events=1), UserState(history=("new0", "i3"))]
    shown = rec.recommend_batch(states, [set(s.history) for s in states], 10)
    return [[s.item_id for s in lst] for lst in shown]


# -- Ranker.restore and the offset guard --------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 400])
def test_restore_leaves_the_state_observe_leaves(chunk: int) -> None:
    stream = _stream(400)
    observed, restored = _ranker(), _ranker()
    for offset, event in stream:
        assert observed.observe(event, 0, offset)
    counted = sum(restored.restore(0, stream[s : s + chunk]) for s in range(0, 400, chunk))
    per_event_updates = observed.new_items.updates
    # observe rewrites new-item vectors on a schedule (coldstart module docstring), restore
    # writes the final ones: they agree once the observed vectors are brought up to date
    observed.new_items.write_vectors(NEW)

    assert counted == 400
    got, want = _state(restored), _state(observed)
    assert got[:3] == want[:3]  # trending order and scores, co-visitation, new items known
    assert len(want[2]) == len(NEW)
    np.testing.assert_allclose(got[3], want[3], rtol=1e-6)
    assert _lists(restored) == _lists(observed)
    assert restored.next_offset(0) == observed.next_offset(0) == 500
    if chunk == 400:  # one vector per touched new item, not one per event
        assert restored.new_items.updates == len(NEW) < per_event_updates


def test_an_observed_offset_is_not_counted_again() -> None:
    rec = _ranker()
    click = Event("a", "u1", "i1", "click", 1_700_000_000_000)
    assert rec.observe(click, 0, 5)
    before = _state(rec)
    again = Event("b", "u2", "i2", "purchase", 1_700_000_000_001)
    assert not rec.observe(again, 0, 5)  # same offset (a re-read)
    assert not rec.observe(again, 0, 2)  # an older one
    assert _state(rec) == before
    assert rec.next_offset(0) == 6 and rec.next_offset(1) == 0
    assert rec.observe(again, 1, 0)  # offsets are per partition
    assert rec.observe(click) and rec.observe(click)  # no partition (a replay's warm-up): counted
    assert rec.trending.score("i1") == pytest.approx(3.0, rel=1e-6)


def test_restoring_the_same_partition_again_adds_nothing() -> None:
    stream = _stream(120)
    rec = _ranker()
    assert rec.restore(0, stream[:80]) == 80
    once = _state(rec)
    assert rec.restore(0, stream[:80]) == 0
    assert rec.restore(0, stream[40:80]) == 0
    assert _state(rec) == once
    assert rec.restore(0, stream) == 40  # only the offsets beyond the restored ones
    reference = _ranker()
    reference.restore(0, stream)
    assert _state(rec)[:3] == _state(reference)[:3]


def test_a_batch_re_read_after_a_failed_commit_is_counted_once() -> None:
    """Defect 2: the worker re-reads a batch whose commit failed; the pipeline runs again."""
    rec = _ranker(explore_rate=0.1)
    pipe = Pipeline(
        load_settings(metrics_port=0, db_url="sqlite://", top_k=5),
        rec.encoder,
        rec.index,
        "v-test",
        clock=FakeClock(1_700_000_001.0),
        ranker=rec,
    )
    stream = _stream(60, seed=4)
    records = [
        Record("streamrec.events", 0, off, e.user_id.encode(), encode_event(e), e.ts)
        for off, e in stream
    ]
    reader = MemoryStateReader()  # the commit failed: the store holds nothing of the batch
    first, _ = pipe.process(records, reader, {0: 1})
    after_first = _state(rec)
    second, _ = pipe.process(records, reader, {0: 1})
    third, _ = pipe.process(records, reader, {0: 1})

    assert _state(rec)[:3] == after_first[:3]
    # the same answers (rec ids); the lists of the first attempt (never published: its commit
    # failed) were ranked before its new-item vectors were written, as every batch's are
    assert [_rec_id(m.value) for m in second.messages] == [_rec_id(m.value) for m in first.messages]
    assert [m.value for m in third.messages] == [m.value for m in second.messages]
    reference = _ranker()
    for _, event in stream:
        reference.observe(event)
    assert _state(rec)[:3] == _state(reference)[:3]


# -- StateRestore over a real store ----------------------------------------------------------


def _store_with(tmp_path: Path, partitions: dict[int, list[tuple[int, Event]]]) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.migrate()
    gens = {p: g for p, (g, _) in store.claim_partitions("t", list(partitions)).items()}
    applied = [AppliedEvent(e, p, off) for p, pairs in partitions.items() for off, e in pairs]
    store.commit_batch(BatchWrite("t", gens, {p: 10**6 for p in partitions}, applied=applied))
    return store


def test_state_restore_works_in_slices_and_only_the_latest_events(tmp_path: Path) -> None:
    p0, p1 = _stream(7, seed=1), _stream(3, seed=2)
    counted: list[int] = []
    rec = _ranker()
    with _store_with(tmp_path, {0: p0, 1: p1}) as store:
        restore = StateRestore(store, rec, limit=5, on_counted=counted.append, chunk_events=2)
        restore.budget_s = 0.0  # one unit of work (a read or a chunk) per step
        restore.add([1, 0])
        assert restore.pending == {0, 1}
        steps = [restore.step() for _ in range(7)]
        # read, 3 chunks; read, 2 chunks; then both are released together
        assert steps == [[], [], [], [], [], [], [0, 1]]
        assert restore.pending == set()
        assert counted == [2, 2, 1, 2, 1]

        reference = _ranker()
        reference.restore(0, p0[-5:])  # the latest `limit` events only
        reference.restore(1, p1)
        assert _state(rec)[:3] == _state(reference)[:3]

        restore.add([0])  # given back: nothing beyond what was restored
        assert restore.step() == [0]
        assert counted == [2, 2, 1, 2, 1]


def test_state_restore_forgets_revoked_partitions_and_resumes_from_the_next_offset(
    tmp_path: Path,
) -> None:
    stream = _stream(6, seed=5)
    rec = _ranker()
    with _store_with(tmp_path, {0: stream}) as store:
        restore = StateRestore(store, rec, limit=100, chunk_events=2)
        restore.budget_s = 0.0
        restore.add([0])
        assert restore.step() == [] and restore.step() == []  # read, first chunk
        restore.discard([0])  # revoked mid-restore
        assert restore.pending == set() and restore.step() == []
        assert rec.next_offset(0) == stream[2][0]
        restore.budget_s = 10.0
        restore.add([0])  # assigned again: reads from the next offset not observed
        assert restore.step() == [0]
        reference = _ranker()
        reference.restore(0, stream)
        assert _state(rec)[:3] == _state(reference)[:3]


def test_state_restore_releases_partitions_together_and_validates_its_limit(tmp_path: Path) -> None:
    with _store_with(tmp_path, {0: []}) as store:
        with pytest.raises(ValueError):
            StateRestore(store, _ranker(), limit=0)
        restore = StateRestore(store, _ranker(), limit=10)
        restore.add([0, 3])
        assert restore.step() == []  # partition 0 read (nothing stored), 3 still pending
        assert restore.pending == {0, 3}
        assert restore.step() == [0, 3]
        assert restore.pending == set()


def test_with_signals_the_restore_primes_windows_below_the_watermark(tmp_path: Path) -> None:
    """A partition whose counts came from another worker's deltas (the watermark is past its
    first events): the restore reads the latest events from the start anyway, counts only
    those past the watermark, and the earlier ones fill the users' windows, so the state is
    the one counting every event gives (without priming, co-visitation misses pairs)."""
    stream = _stream(60, seed=4)
    reference = _ranker(new_item_vectors=False)
    for offset, event in stream:
        reference.observe(event, 0, offset)
    donor = _ranker(new_item_vectors=False)  # the previous owner: counted the first 40
    donor.recorder = make_recorder(load_settings(), donor, "donor")
    for offset, event in stream[:40]:
        donor.observe(event, 0, offset)
    deltas = donor.recorder.take()
    covisit: dict[bool, list[dict[str, float]]] = {}
    with _store_with(tmp_path, {0: stream}) as store:
        for prime in (True, False):
            moved = _ranker(new_item_vectors=False)
            assert [moved.merge_signals(d) for d in deltas] == ["applied"]
            restore = StateRestore(store, moved, limit=100, prime_windows=prime)
            restore.add([0])
            assert restore.step() == [0]
            assert moved.next_offset(0) == stream[-1][0] + 1
            assert dict(moved.trending.ranked()) == pytest.approx(dict(reference.trending.ranked()))
            covisit[prime] = [dict(moved.covisit.neighbors(i)) for i in [*TRAINED, *NEW]]
    want = [dict(reference.covisit.neighbors(i)) for i in [*TRAINED, *NEW]]
    assert all(got == pytest.approx(w) for got, w in zip(covisit[True], want, strict=True))
    assert not all(got == pytest.approx(w) for got, w in zip(covisit[False], want, strict=True))


def _rec_id(value: bytes | None) -> str:
    assert value is not None
    return str(json.loads(value)["rec_id"])
