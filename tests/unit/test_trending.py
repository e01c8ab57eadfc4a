"""Trending: decay math, event-type weights, ranking and filters."""

from __future__ import annotations

import math

import pytest

from streamrec.ranking.trending import Trending

DAY_MS = 86_400_000


def test_a_contribution_halves_every_half_life() -> None:
    t = Trending(half_life_s=86_400)
    t.observe("a", "click", 0)
    assert t.score("a", 0) == pytest.approx(1.0)
    assert t.score("a", DAY_MS) == pytest.approx(0.5)
    assert t.score("a", 3 * DAY_MS) == pytest.approx(0.125)


def test_score_is_the_sum_of_decayed_weighted_events() -> None:
    t = Trending(half_life_s=3600, event_weights={"click": 1.0, "purchase": 3.0})
    t.observe("a", "click", 0)
    t.observe("a", "purchase", 1_800_000)
    expected = 2 ** (-2.0) + 3.0 * 2 ** (-1.5)
    assert t.score("a", 7_200_000) == pytest.approx(expected)


def test_recent_events_beat_older_bursts() -> None:
    t = Trending(half_life_s=3600)
    for _ in range(3):
        t.observe("old", "click", 0)
    t.observe("new", "click", 3 * 3_600_000)  # 3 half-lives later: old is worth 3/8
    assert [i for i, _ in t.ranked()] == ["new", "old"]


def test_rebase_keeps_scores_over_very_long_streams() -> None:
    t = Trending(half_life_s=1.0)
    t.observe("a", "click", 0)
    t.observe("b", "click", 10_000_000)  # 10^4 half-lives: forces a rebase
    t.observe("b", "click", 10_000_000)
    assert t.score("b") == pytest.approx(2.0)
    assert t.score("a") == 0.0 or math.isclose(t.score("a"), 0.0, abs_tol=1e-300)
    assert t.top(1) == [("b", pytest.approx(2.0))]


def test_top_skips_excluded_and_unavailable_items_and_breaks_ties_by_id() -> None:
    t = Trending(half_life_s=60)
    for item in ("c", "b", "a", "d"):
        t.observe(item, "click", 1000)
    assert [i for i, _ in t.top(2)] == ["a", "b"]
    assert [i for i, _ in t.top(2, exclude={"a"}, available=lambda i: i != "b")] == ["c", "d"]
    assert t.top(0) == []


def test_rejects_a_non_positive_half_life() -> None:
    with pytest.raises(ValueError, match="half_life_s"):
        Trending(half_life_s=0)


def test_ranking_reads_past_the_sorted_head_in_exact_order(monkeypatch) -> None:
    import random

    import streamrec.ranking.trending as trending

    monkeypatch.setattr(trending, "_HEAD", 4)  # force several head extensions
    rnd = random.Random(3)
    t = Trending(3600.0)
    for n in range(300):
        t.add(f"i{rnd.randint(0, 40)}", rnd.choice([1.0, 2.0]), 1000 * n)
    want = sorted(
        ((i, t.score(i)) for i in {f"i{n}" for n in range(41)}), key=lambda kv: (-kv[1], kv[0])
    )
    got = list(t.ranked())
    assert [i for i, _ in got] == [i for i, s in want if s > 0]
    assert [s for _, s in got] == pytest.approx([s for _, s in want if s > 0])
    assert t.top(3, exclude={got[0][0]}) == got[1:4]


def test_rankings_between_arrivals_of_new_items_keep_ties_by_id(monkeypatch) -> None:
    """New rows between rankings: only the head's ids are read, in the same order."""
    import random

    import streamrec.ranking.trending as trending

    monkeypatch.setattr(trending, "_HEAD", 8)
    rnd = random.Random(5)
    t = Trending(3600.0)
    for n in range(400):  # whole-second steps and equal weights: many exact ties
        t.add(f"i{rnd.randint(0, 200) if n % 4 else 1000 + n}", 1.0, 1000 * (n // 5))
        if n % 7 == 0:
            items = {i for i in (f"i{m}" for m in range(1400)) if t.score(i) > 0}
            want = sorted(((i, t.score(i)) for i in items), key=lambda kv: (-kv[1], kv[0]))
            got = t.top(12)
            assert [i for i, _ in got] == [i for i, _ in want[:12]]


# -- pruning past the decay horizon ------------------------------------------------------------


def test_prune_forgets_only_negligible_rows_and_keeps_the_ranking() -> None:
    t = Trending(half_life_s=3600, prune_below=0.01)
    t.observe("old", "click", 0)  # 7 half-lives later: 1/128 < 0.01
    t.observe("older", "purchase", 0)  # 3/128 >= 0.01: kept
    for n in range(5):
        t.observe(f"new{n}", "click", 7 * 3_600_000 - n)
    before = [(i, s) for i, s in t.ranked() if i != "old"]
    assert t.prune() == 1
    assert t.pruned == 1 and len(t) == 6
    assert t.score("old") == 0.0
    after = list(t.ranked())
    assert [i for i, _ in after] == [i for i, _ in before]
    assert [s for _, s in after] == pytest.approx([s for _, s in before])
    t.observe("brand-new", "click", 7 * 3_600_000)  # takes the freed row
    assert len(t._ids) == 7 and len(t) == 7
    assert t.score("brand-new") == pytest.approx(1.0)
    t.observe("old", "click", 7 * 3_600_000)  # seen again: a fresh row, its past forgotten
    assert t.score("old") == pytest.approx(1.0)
    assert [i for i, _ in t.top(3)] == ["brand-new", "new0", "old"]
    assert t.prune() == 0


def test_rows_stay_bounded_under_a_stream_of_ever_new_ids() -> None:
    """200,000 distinct ids (junk, churn), one an hour-long half-life minute each: the table
    holds at most twice the rows that still count, never the whole history."""
    t = Trending(half_life_s=3600)
    for n in range(200_000):
        t.observe(f"id-{n}", "click", n * 60_000)
        t.observe("steady", "click", n * 60_000)
    # items younger than log2(1000) = 10 half-lives (600 minutes) still count
    assert len(t._ids) <= max(2 * 601, 4096) + 1
    assert t.pruned == 200_001 - len(t)
    assert t.top(1)[0][0] == "steady"
    assert t.score("id-199999") == pytest.approx(1.0)


def test_never_pruned_with_prune_below_zero() -> None:
    t = Trending(half_life_s=1.0, prune_below=0.0)
    for n in range(5000):
        t.observe(f"id-{n}", "click", n * 100_000)
    assert len(t) == 5000 and t.prune() == 0


def test_one_prune_of_a_million_rows_is_short() -> None:
    import time

    t = Trending(half_life_s=3600)
    t._prune_at = 10**9  # grow without pruning first
    for n in range(1_000_000):
        t.add(f"item-{n:07d}", 1.0, n * 50)  # 50 ms apart: the oldest 28 % are past 10 half-lives
    start = time.perf_counter()
    dropped = t.prune()
    took = time.perf_counter() - start
    print(f"\npruned {dropped} of 1,000,000 trending rows in {took * 1000:.0f} ms")
    assert 0 < dropped < 1_000_000
    assert took < 1.0


def test_the_worker_prunes_with_its_setting() -> None:
    from streamrec.ops.settings import Settings
    from streamrec.ranking.ranker import Ranker, RankingConfig
    from streamrec.testing import MeanEncoder, random_index

    config = RankingConfig.from_settings(Settings(trending_min_score=0.5))
    rec = Ranker(MeanEncoder(dim=4), random_index(n_items=10, dim=4, seed=0), config)
    assert rec.trending.prune_below == 0.5
    assert RankingConfig().trending_min_score == Settings().trending_min_score
