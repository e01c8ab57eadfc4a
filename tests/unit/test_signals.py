"""Global signals: deltas recorded by one ranker and merged by another, counted once."""

from __future__ import annotations

import random

import pytest

from streamrec.core.events import Event
from streamrec.ranking.ranker import Ranker, RankingConfig
from streamrec.ranking.signals import DeltaRecorder, SignalDelta, classify
from streamrec.testing import MeanEncoder, random_index

DAY_MS = 86_400_000
CONFIG = RankingConfig(new_item_vectors=False)


def _ranker(name: str, config: RankingConfig = CONFIG, **caps: int) -> Ranker:
    rec = Ranker(MeanEncoder(dim=4), random_index(n_items=30, dim=4, seed=0), config)
    cfg = rec.config
    covisit_ms = None if cfg.covisit_half_life_s is None else cfg.covisit_half_life_s * 1000
    rec.recorder = DeltaRecorder(name, cfg.trending_half_life_s * 1000, covisit_ms, **caps)
    return rec


def _stream(n: int, partitions: int = 2, seed: int = 0) -> list[tuple[int, int, Event]]:
    """(partition, offset, event): users keyed to partitions, event time over ~20 days."""
    rng = random.Random(seed)
    offsets = [0] * partitions
    out = []
    for k in range(n):
        user = f"u{rng.randrange(12)}"
        p = int(user[1:]) % partitions
        kind = "purchase" if rng.random() < 0.1 else "click"
        event = Event(f"e{k}", user, f"i{rng.randrange(30)}", kind, k * 20 * DAY_MS // n)
        out.append((p, offsets[p], event))
        offsets[p] += 1
    return out


def _trending(rec: Ranker) -> dict[str, float]:
    return {i: rec.trending.score(i) for i in (f"i{n}" for n in range(30))}


def _pairs(rec: Ranker) -> dict[tuple[str, str], float]:
    ids = [f"i{n}" for n in range(30)]
    return {(a, b): rec.covisit.count(a, b) for a in ids for b in ids if a < b}


def _assert_same_counts(rec: Ranker, ref: Ranker) -> None:
    got, want = _trending(rec), _trending(ref)
    assert got == pytest.approx(want, rel=1e-9)
    got_pairs, want_pairs = _pairs(rec), _pairs(ref)
    assert got_pairs == pytest.approx(want_pairs, rel=1e-9, abs=1e-12)
    assert sum(want.values()) > 0 and sum(want_pairs.values()) > 0


def _exchange(workers: dict[int, Ranker], round_trip: bool = True) -> list[SignalDelta]:
    """Every worker publishes; every worker (itself too: it reads the topic) merges all."""
    deltas = [d for rec in workers.values() for d in rec.recorder.take()]  # type: ignore[union-attr]
    if round_trip:
        for rec in workers.values():
            for d in deltas:
                rec.merge_signals(d)
    return deltas


def _run(workers: dict[int, Ranker], stream: list[tuple[int, int, Event]], every: int) -> None:
    """Each event is observed by the owner of its partition; deltas exchanged every ``every``."""
    for n, (p, offset, event) in enumerate(stream, 1):
        workers[p].observe(event, p, offset)
        if n % every == 0:
            _exchange(workers)
    _exchange(workers)


def test_two_workers_exchanging_deltas_count_what_one_worker_counts() -> None:
    stream = _stream(400)
    one = Ranker(MeanEncoder(dim=4), random_index(n_items=30, dim=4, seed=0), CONFIG)
    for p, offset, event in stream:
        one.observe(event, p, offset)
    a, b = _ranker("a"), _ranker("b")
    _run({0: a, 1: b}, stream, every=37)
    _assert_same_counts(a, one)
    _assert_same_counts(b, one)


def test_without_the_exchange_each_worker_sees_only_its_partition() -> None:
    stream = _stream(400)
    one = Ranker(MeanEncoder(dim=4), random_index(n_items=30, dim=4, seed=0), CONFIG)
    a = _ranker("a")
    for p, offset, event in stream:
        one.observe(event, p, offset)
        if p == 0:
            a.observe(event, p, offset)
    assert sum(_trending(a).values()) < 0.8 * sum(_trending(one).values())


def test_duplicated_and_replayed_deltas_are_not_counted_twice() -> None:
    stream = _stream(300)
    a, b = _ranker("a"), _ranker("b")
    published: list[SignalDelta] = []
    for n, (p, offset, event) in enumerate(stream, 1):
        (a if p == 0 else b).observe(event, p, offset)
        if n % 50 == 0:
            published += _exchange({0: a, 1: b})
    published += _exchange({0: a, 1: b})
    before_a, before_b = _trending(a), _trending(b)
    pairs_a = _pairs(a)
    replay = published + published[::-1]  # the whole topic re-read, then again out of order
    outcomes = [a.merge_signals(d) for d in replay] + [b.merge_signals(d) for d in replay]
    assert set(outcomes) == {"duplicate"}
    assert _trending(a) == before_a and _trending(b) == before_b and _pairs(a) == pairs_a


def test_own_deltas_read_back_are_skipped() -> None:
    a = _ranker("a")
    for offset, (_, _, event) in enumerate(_stream(50, partitions=1)):
        a.observe(event, 0, offset)
    before = _trending(a)
    deltas = a.recorder.take()  # type: ignore[union-attr]
    assert [(d.start, d.end) for d in deltas] == [(0, 50)]
    assert [a.merge_signals(d) for d in deltas] == ["duplicate"]
    assert _trending(a) == before


def test_a_straddling_delta_is_skipped_not_double_counted() -> None:
    assert classify(10, SignalDelta("x", 0, 0, 10, 0.0)) == "duplicate"
    assert classify(10, SignalDelta("x", 0, 5, 15, 0.0)) == "overlap"
    assert classify(10, SignalDelta("x", 0, 10, 15, 0.0)) == "applied"
    assert classify(10, SignalDelta("x", 0, 12, 15, 0.0)) == "applied"  # a gap: lost, not twice
    with pytest.raises(ValueError):
        SignalDelta("x", 0, 5, 5, 0.0)


def test_a_restart_rebuilds_from_the_deltas_then_the_database_without_double_counting() -> None:
    """A restarted worker reads the signals topic, then restores its partition from the
    database beyond the watermark: every event is counted exactly once."""
    stream = _stream(400)
    one = Ranker(MeanEncoder(dim=4), random_index(n_items=30, dim=4, seed=0), CONFIG)
    for p, offset, event in stream:
        one.observe(event, p, offset)
    a, b = _ranker("a"), _ranker("b")
    topic: list[SignalDelta] = []
    cut = 300  # a's last delta before its crash covered events up to here
    for n, (p, offset, event) in enumerate(stream, 1):
        (a if p == 0 else b).observe(event, p, offset)
        if n % 40 == 0 and n <= cut:
            topic += _exchange({0: a, 1: b})
    topic += b.recorder.take()  # type: ignore[union-attr]  # a crashed: its last range is lost
    fresh = _ranker("a2")
    for d in topic:
        fresh.merge_signals(d)
    fresh_watermark = fresh.next_offset(0)
    assert 0 < fresh_watermark < sum(1 for p, _, _ in stream if p == 0)
    # the database's latest events of 0 (all of them here): those below the watermark only
    # fill the users' windows, the rest are counted
    counted = fresh.restore(0, [(o, e) for p, o, e in stream if p == 0])
    assert counted == sum(1 for p, o, _ in stream if p == 0 and o >= fresh_watermark)
    _assert_same_counts(fresh, one)


def test_a_partition_moved_to_another_worker_is_counted_once_everywhere() -> None:
    stream = _stream(400)
    one = Ranker(MeanEncoder(dim=4), random_index(n_items=30, dim=4, seed=0), CONFIG)
    for p, offset, event in stream:
        one.observe(event, p, offset)
    a, b, c = _ranker("a"), _ranker("b"), _ranker("c")  # c owns nothing: an observer
    workers = {0: a, 1: b}
    moved = False
    for n, (p, offset, event) in enumerate(stream, 1):
        if n == 200:  # a flushes on revoke, b claims 0 and restores it from the database
            for d in _exchange(workers):
                c.merge_signals(d)
            workers[0] = b
            assert b.restore(0, [(o, e) for q, o, e in stream[: n - 1] if q == 0]) == 0
            moved = True
        workers[p].observe(event, p, offset)
        if n % 30 == 0:
            for d in _exchange({0: a, 1: b}):
                c.merge_signals(d)
    for d in _exchange({0: a, 1: b}):
        c.merge_signals(d)
    assert moved
    for rec in (a, b, c):
        _assert_same_counts(rec, one)


def test_deltas_are_bounded_keeping_the_heaviest() -> None:
    a = _ranker("a", max_items=5, max_pairs=7)
    for offset, (_, _, event) in enumerate(_stream(200, partitions=1)):
        a.observe(event, 0, offset)
    (delta,) = a.recorder.take()  # type: ignore[union-attr]
    assert len(delta.items) == 5 and len(delta.pairs) == 7
    assert a.recorder.dropped > 0  # type: ignore[union-attr]
    full = _ranker("full")
    for offset, (_, _, event) in enumerate(_stream(200, partitions=1)):
        full.observe(event, 0, offset)
    (whole,) = full.recorder.take()  # type: ignore[union-attr]
    heaviest = sorted((w for _, w in whole.items), reverse=True)[:5]
    assert sorted((w for _, w in delta.items), reverse=True) == pytest.approx(heaviest)


def test_ranges_restart_when_the_watermark_moves_under_them() -> None:
    rec = DeltaRecorder("a", 1000.0, None)
    rec.offset(0, 0, 0)
    rec.count(0, "i1", 1.0, 0, [])
    rec.offset(0, 1, 1)
    rec.offset(0, 5, 5)  # a merged delta moved the watermark from 2 to 5
    rec.count(0, "i2", 1.0, 10, [("i1", 1.0)])
    deltas = rec.take()
    assert [(d.start, d.end) for d in deltas] == [(0, 2), (5, 6)]
    assert deltas[1].pairs == (("i1", "i2", 1.0),)


def test_event_time_far_past_a_range_start_opens_a_new_range() -> None:
    rec = DeltaRecorder("a", 1.0, 1.0)
    rec.offset(0, 0, 0)
    rec.count(0, "i1", 1.0, 0, [])
    rec.offset(0, 1, 1)
    rec.count(0, "i1", 1.0, 10_000, [])  # 10,000 half-lives later
    deltas = rec.take()
    assert [(d.start, d.end, d.ts_ms) for d in deltas] == [(0, 1, 0.0), (1, 2, 10_000.0)]


def test_a_delta_survives_its_record_encoding() -> None:
    from streamrec.worker.signals import decode_delta, encode_delta

    delta = SignalDelta("w-1", 3, 10, 42, 1.7e12, (("i1", 2.5),), (("i1", "i2", 0.125),), 9.5)
    assert decode_delta(encode_delta(delta)) == delta
    with pytest.raises(ValueError):
        decode_delta(b'{"v": 99}')


def test_a_delta_too_large_for_one_record_keeps_its_heaviest_part() -> None:
    from streamrec.worker.signals import decode_delta, encode_delta, fitted

    long = "x" * 200
    pairs = tuple((f"a{n}{long}", f"b{n}{long}", float(n)) for n in range(100))
    delta = SignalDelta("w", 0, 0, 5, 0.0, (("i", 1.0),), pairs)
    assert fitted(delta) == encode_delta(delta)  # fits: unchanged
    value = fitted(delta, limit=len(encode_delta(delta)) // 3)
    kept = decode_delta(value)
    assert len(value) <= len(encode_delta(delta)) // 3 and kept.items == delta.items
    assert 0 < len(kept.pairs) < 100 and min(w for _, _, w in kept.pairs) > 50
    assert (kept.start, kept.end) == (0, 5)  # the range stays: the events count once
