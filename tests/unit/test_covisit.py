"""Co-visitation: pair counts with event-type weights, windows, pruning, candidates."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.core.events import Event
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


def _stream(seed: int, n: int, ts_step: int) -> list[tuple[str, str, str, int]]:
    """Skewed random events: few users, popular items, some purchases, tied timestamps."""
    rng = np.random.default_rng(seed)
    items = rng.zipf(1.3, size=n) % 60
    return [
        (f"u{rng.integers(12)}", f"i{item}", "purchase" if rng.random() < 0.1 else "click", ts)
        for ts, item in zip(np.arange(n) // 3 * ts_step, items.tolist(), strict=True)
    ]


@pytest.mark.parametrize("half_life_s", [None, 50.0, 0.5])  # 0.5 s: the clock rebases
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_candidate_scores_are_the_candidates_exactly(seed: int, half_life_s: float | None) -> None:
    cv = CoVisitation(window=6, max_neighbors=8, half_life_s=half_life_s)  # rows get pruned
    histories: dict[str, list[str]] = {}
    for n, (user, item, kind, ts) in enumerate(_stream(seed, 1500, 1000)):
        cv.observe(user, item, kind, ts)
        histories.setdefault(user, []).append(item)
        if n % 97 == 0:
            for history in histories.values():
                for recent in (0, 1, 3, 5):
                    want = cv.candidates(history, 10_000, recent=recent)
                    keys, scores = cv.candidate_scores(history, recent=recent)
                    assert len(set(keys.tolist())) == len(keys)
                    got = sorted(
                        zip([cv.names[k] for k in keys.tolist()], scores.tolist(), strict=True),
                        key=lambda kv: (-kv[1], kv[0]),
                    )
                    assert got == want  # the same floats, not approximately


def test_neighbor_arrays_are_the_stored_rows_by_key() -> None:
    cv = CoVisitation(window=4, max_neighbors=5, half_life_s=30.0)
    for user, item, kind, ts in _stream(7, 800, 1000):
        cv.observe(user, item, kind, ts)
    factor = 2.0 ** (-(cv._clock.now_ms - cv._clock.anchor_ms) / cv.half_life_ms)
    for n in range(60):
        keys, weights = cv.neighbor_arrays(f"i{n}")
        names = [cv.names[k] for k in keys.tolist()]
        assert dict(zip(names, (weights * factor).tolist(), strict=True)) == cv.neighbors(f"i{n}")
        assert all(cv.key_of(name) == k for name, k in zip(names, keys.tolist(), strict=True))
    assert cv.neighbor_arrays("never-seen")[0].size == 0


def test_a_pruned_row_keeps_the_best_neighbours_best_first_ties_by_id() -> None:
    cv = CoVisitation(window=1, max_neighbors=3)
    weights = {"e": 2.0, "b": 5.0, "g": 2.0, "a": 1.0, "f": 5.0, "c": 2.0, "d": 9.0}
    for n, (item, times) in enumerate(weights.items()):
        for m in range(int(times)):
            cv.observe(f"u{n}-{m}", "hub", "click")
            cv.observe(f"u{n}-{m}", item, "click")
    # the first pair with "d", the 7th neighbour, made 7 > 2 * 3: the best 3 then stayed, in
    # (-weight, id) order (b and f, then c of the tied c, e, g); "d" came back and grew
    assert list(cv.neighbors("hub").items()) == [("b", 5.0), ("f", 5.0), ("c", 2.0), ("d", 8.0)]
    cv.observe("late", "hub", "click")
    cv.observe("late", "z", "click")
    assert list(cv.neighbors("hub")) == ["b", "f", "c", "d", "z"]  # newcomers are appended


def test_the_worker_bounds_remembered_users_by_its_setting() -> None:
    from streamrec.ops.settings import Settings
    from streamrec.ranking.ranker import Ranker, RankingConfig
    from streamrec.testing import MeanEncoder, random_index

    config = RankingConfig.from_settings(Settings(covisit_max_users=3))
    rec = Ranker(MeanEncoder(dim=4), random_index(n_items=10, dim=4, seed=0), config)
    assert rec.covisit.max_users == 3
    for n in range(10):
        rec.observe(Event(f"e{n}", f"u{n}", f"i{n}", "click", n))
    assert list(rec.covisit._recent) == ["u7", "u8", "u9"]
    assert rec.covisit.max_pairs == Settings().covisit_max_pairs
    assert RankingConfig().covisit_max_users == Settings().covisit_max_users


def _entries(cv: CoVisitation) -> int:
    return sum(len(row.keys) for row in cv._rows.values())


def test_entries_are_counted_exactly_through_row_prunes() -> None:
    cv = CoVisitation(window=5, max_neighbors=3)
    rng = np.random.default_rng(0)
    for n in range(2000):
        cv.observe(f"u{rng.integers(30)}", f"i{rng.integers(40)}", "click", n)
    assert cv._entries == _entries(cv) > 0
    assert max(len(row.keys) for row in cv._rows.values()) <= 6


def test_max_pairs_forgets_the_rows_least_recently_counted_in() -> None:
    cv = CoVisitation(window=2, max_neighbors=10, max_pairs=40)
    for n in range(200):  # ever new pairs: (old-n, old-n-b) for a user each
        cv.observe(f"u{n}", f"a{n}", "click", n)
        cv.observe(f"u{n}", f"b{n}", "click", n)
        assert cv._entries == _entries(cv) <= 40
    assert cv.evicted_rows > 0
    assert cv.count("a199", "b199") == 1.0 and cv.count("b199", "a199") == 1.0
    assert cv.neighbors("a0") == {}  # the oldest went first
    cv.observe("u-hot", "a0", "click", 300)  # an item forgotten, then seen again: afresh
    cv.observe("u-hot", "b199", "click", 301)
    assert cv.count("a0", "b199") == 1.0


def test_max_pairs_must_hold_a_full_row() -> None:
    with pytest.raises(ValueError, match="max_pairs"):
        CoVisitation(max_neighbors=200, max_pairs=100)


def test_eviction_keeps_rows_bounded_at_scale() -> None:
    """40,000 events over 20,000 items: entries never pass max_pairs by more than one event's."""
    cv = CoVisitation(window=20, max_pairs=30_000, half_life_s=86400.0)
    rng = np.random.default_rng(1)
    users, items = rng.integers(2000, size=40_000), rng.integers(20_000, size=40_000)
    peak = 0
    for n, (u, i) in enumerate(zip(users.tolist(), items.tolist(), strict=True)):
        cv.observe(f"u{u}", f"i{i}", "click", n * 1000)
        peak = max(peak, cv._entries)
    assert peak <= 30_000 + 2 * 20
    assert cv.evicted_rows > 0
    assert cv._entries == _entries(cv)
