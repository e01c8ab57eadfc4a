"""Sliding-window quality signals: coverage, cold start, exploration, clicked rank."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamrec.ops.quality import (
    CoverageTracker,
    QualityTracker,
    RatioTracker,
    RecObservation,
    SlidingWindow,
)
from streamrec.testing import FakeClock


def _obs(user: str, item: str, items: tuple[str, ...], **kw: object) -> RecObservation:
    fields: dict = {"event_type": "click", "history_len": 5, "explored": 0, **kw}
    return RecObservation(user_id=user, item_id=item, items=items, **fields)


def test_window_evicts_by_count_and_by_age() -> None:
    clock = FakeClock(1000.0)
    w: SlidingWindow[int] = SlidingWindow(max_events=3, max_age_s=10, clock=clock)
    assert w.add(1) == [] and w.add(2) == [] and w.add(3) == []
    assert w.add(4) == [1]
    assert w.values() == [2, 3, 4]
    clock.advance(10.5)
    assert w.add(5) == [2, 3, 4]
    assert w.values() == [5]
    clock.advance(11)
    assert w.expire() == [5] and len(w) == 0


def test_window_rejects_empty_bounds() -> None:
    with pytest.raises(ValueError):
        SlidingWindow(0, 10, FakeClock(0.0))
    with pytest.raises(ValueError):
        SlidingWindow(10, 0, FakeClock(0.0))


def test_coverage_counts_distinct_items_in_window_only() -> None:
    clock = FakeClock(0.0)
    cov = CoverageTracker(SlidingWindow(2, 60, clock))
    cov.add(["a", "b", "a"])
    cov.add(["b", "c"])
    assert cov.distinct() == 3
    assert cov.coverage(6) == pytest.approx(0.5)
    cov.add(["d"])  # pushes out ["a", "b"]: b is still in the second list
    assert cov.distinct() == 3
    clock.advance(61)
    assert cov.distinct() == 0
    assert cov.coverage(0) == 0.0


def test_coverage_never_exceeds_one() -> None:
    cov = CoverageTracker(SlidingWindow(10, 60, FakeClock(0.0)))
    cov.add(["a", "b", "c"])
    assert cov.coverage(2) == 1.0


@given(st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=5), max_size=40))
def test_coverage_matches_a_recount(lists: list[list[str]]) -> None:
    cov = CoverageTracker(SlidingWindow(7, 60, FakeClock(0.0)))
    for items in lists:
        cov.add(items)
    expected = {i for items in lists[-7:] for i in items}
    assert cov.distinct() == len(expected)


def test_ratio_is_none_when_empty_and_forgets_old_values() -> None:
    clock = FakeClock(0.0)
    r = RatioTracker(SlidingWindow(100, 10, clock))
    assert r.value() is None
    r.add(1.0)
    r.add(0.0)
    r.add(0.0)
    r.add(1.0)
    assert r.value() == pytest.approx(0.5)
    clock.advance(5)
    r.add(3.0, 4.0)
    assert r.value() == pytest.approx(5.0 / 8.0)
    clock.advance(6)
    assert r.value() == pytest.approx(0.75)
    clock.advance(10)
    assert r.value() is None


def test_cold_start_share() -> None:
    q = QualityTracker(FakeClock(0.0), cold_start_history=3)
    for n, length in enumerate([1, 2, 3, 10]):
        q.observe(_obs(f"u{n}", "x", ("a",), history_len=length, event_type="purchase"))
    assert q.snapshot(10).cold_start_share == pytest.approx(0.5)


def test_exploration_rate_counts_slots() -> None:
    q = QualityTracker(FakeClock(0.0))
    assert q.snapshot(10).exploration_rate is None
    q.observe(_obs("u1", "x", ("a", "b", "c", "d"), explored=1))
    q.observe(_obs("u2", "x", ("a", "b", "c", "d"), explored=0))
    q.observe(_obs("u3", "x", (), explored=2))  # empty lists have no slots
    assert q.snapshot(10).exploration_rate == pytest.approx(1 / 8)


def test_clicked_rank_uses_the_users_previous_recommendation() -> None:
    q = QualityTracker(FakeClock(0.0))
    q.observe(_obs("u1", "x", ("a", "b", "c")))  # first event: nothing to score
    q.observe(_obs("u2", "y", ("c", "d")))
    snap = q.snapshot(10)
    assert snap.clicked_rank_mean is None and snap.click_hit_share is None
    q.observe(_obs("u1", "c", ("d", "e")))  # c was rank 3 for u1
    q.observe(_obs("u2", "d", ("a",)))  # d was rank 2 for u2
    q.observe(_obs("u1", "z", ("a",)))  # z not in (d, e): a miss
    q.observe(_obs("u2", "a", ("b",), event_type="purchase"))  # purchases are not clicks
    snap = q.snapshot(10)
    assert snap.clicked_rank_mean == pytest.approx(2.5)
    assert snap.click_hit_share == pytest.approx(2 / 3)


def test_previous_recommendations_are_bounded_lru() -> None:
    q = QualityTracker(FakeClock(0.0), max_users=2)
    q.observe(_obs("u1", "x", ("a",)))
    q.observe(_obs("u2", "x", ("a",)))
    q.observe(_obs("u1", "y", ("a",)))  # u1 refreshed: u2 is now the oldest
    q.observe(_obs("u3", "x", ("a",)))  # evicts u2
    q.observe(_obs("u1", "a", ("b",)))  # u1 remembered: rank 1
    q.observe(_obs("u2", "a", ("b",)))  # u2 forgotten: not scored
    snap = q.snapshot(10)
    assert snap.click_hit_share == pytest.approx(1 / 2)  # u1's miss on y, hit on a
    assert snap.clicked_rank_mean == pytest.approx(1.0)


def test_snapshot_coverage_over_time() -> None:
    clock = FakeClock(0.0)
    q = QualityTracker(clock, max_events=100, max_age_s=60)
    q.observe(_obs("u1", "x", ("a", "b")))
    clock.advance(30)
    q.observe(_obs("u2", "x", ("c", "d")))
    assert q.snapshot(8).coverage == pytest.approx(0.5)
    assert q.snapshot(8).recommended_items == 4
    clock.advance(31)
    assert q.snapshot(8).coverage == pytest.approx(0.25)
