"""Co-visitation: pair counts with event-type weights, windows, pruning, candidates."""

from __future__ import annotations

import pytest

from streamrec.ranking.covisit import CoVisitation


def test_pairs_within_the_window_are_counted_both_ways_with_type_weights() -> None:
    cv = CoVisitation(window=2, event_weights={"click": 1.0, "purchase": 3.0})
    assert cv.observe("u", "a", "click") == []
    assert cv.observe("u", "b", "purchase") == ["a"]
    assert cv.observe("u", "c", "click") == ["a", "b"]
    assert cv.observe("u", "d", "click") == ["b", "c"]  # "a" left the window of 2
    assert cv.count("a", "b") == cv.count("b", "a") == 3.0
    assert cv.count("b", "c") == 3.0
    assert cv.count("a", "c") == 1.0
    assert cv.count("a", "d") == 0.0


def test_users_do_not_pair_with_each_other_and_self_pairs_are_skipped() -> None:
    cv = CoVisitation(window=5)
    cv.observe("u1", "a", "click")
    cv.observe("u2", "b", "click")
    cv.observe("u1", "a", "click")
    assert cv.count("a", "b") == 0.0
    assert cv.neighbors("a") == {}


def test_a_purchase_pair_counts_more_than_a_click_pair() -> None:
    cv = CoVisitation(window=5, event_weights={"click": 1.0, "purchase": 3.0})
    cv.observe("u1", "x", "click")
    cv.observe("u1", "bought", "purchase")
    cv.observe("u2", "x", "click")
    cv.observe("u2", "clicked", "click")
    cands = cv.candidates(["x"], 2)
    assert [i for i, _ in cands] == ["bought", "clicked"]


def test_candidates_weight_recent_history_and_filter() -> None:
    cv = CoVisitation(window=1)
    cv.observe("u1", "old", "click")
    cv.observe("u1", "n_old", "click")
    cv.observe("u2", "new", "click")
    cv.observe("u2", "n_new", "click")
    got = cv.candidates(["old", "new"], 5, recent=2, recency_decay=0.5)
    assert got == [("n_new", pytest.approx(1.0)), ("n_old", pytest.approx(0.5))]
    assert cv.candidates(["old", "new"], 5, exclude={"n_new"}) == [("n_old", pytest.approx(0.7))]
    assert cv.candidates(["old", "new"], 5, available=lambda i: i != "n_old")[0][0] == "n_new"


def test_neighbor_lists_stay_bounded() -> None:
    cv = CoVisitation(window=1, max_neighbors=3)
    for n in range(50):
        cv.observe(f"u{n}", "hub", "click")
        cv.observe(f"u{n}", f"i{n}", "click")
    assert len(cv.neighbors("hub")) <= 6


def test_users_beyond_max_users_are_forgotten_oldest_first() -> None:
    cv = CoVisitation(window=3, max_users=1)
    cv.observe("u1", "a", "click")
    cv.observe("u2", "b", "click")
    assert cv.observe("u1", "c", "click") == []  # u1's window was dropped


def test_with_a_half_life_pair_counts_halve_every_half_life_of_event_time() -> None:
    cv = CoVisitation(window=5, half_life_s=10.0)
    cv.observe("u", "a", "click", 0)
    cv.observe("u", "b", "click", 0)
    assert cv.count("a", "b") == pytest.approx(1.0)
    cv.observe("v", "x", "click", 10_000)  # time moves on: the old pair is worth half
    assert cv.count("a", "b") == pytest.approx(0.5)
    cv.observe("v", "y", "click", 10_000)  # a fresh pair counts fully
    assert cv.count("x", "y") == pytest.approx(1.0)
    assert cv.neighbors("a") == pytest.approx({"b": 0.5})
    # recent evidence outranks an older, larger count
    cv.observe("w", "a", "click", 10_000)
    cv.observe("w", "c", "click", 10_000)
    assert [i for i, _ in cv.candidates(["a"], 2)] == ["c", "b"]


def test_decayed_counts_survive_rebasing_over_very_long_streams() -> None:
    cv = CoVisitation(window=2, half_life_s=1.0)
    ts = 0
    for n in range(300):  # 300 half-lives between the first and the last pair
        ts = n * 1000
        cv.observe(f"u{n}", "a", "click", ts)
        cv.observe(f"u{n}", "b", "click", ts)
    total = sum(2.0 ** -(299 - n) for n in range(300))
    assert cv.count("a", "b") == pytest.approx(total)
    with pytest.raises(ValueError, match="half_life_s"):
        CoVisitation(half_life_s=0.0)
