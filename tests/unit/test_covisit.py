"""Co-visitation: pair counts with event-type weights, windows, pruning, candidates."""

from __future__ import annotations

import pytest

from streamrec.covisit import CoVisitation


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
