"""Pure ranking: filters, dedup, order, length."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.core.events import RecItem
from streamrec.core.history import UserState
from streamrec.ranking.rank import exclusions, rank


def _always(_item: str) -> bool:
    return True


def test_rank_sorts_by_score_then_id() -> None:
    cands = [("b", 0.5), ("c", 0.9), ("a", 0.5), ("d", 0.1)]
    assert rank(cands, 10, set(), _always) == (
        RecItem("c", 0.9),
        RecItem("a", 0.5),
        RecItem("b", 0.5),
        RecItem("d", 0.1),
    )


def test_rank_drops_excluded_and_unavailable() -> None:
    cands = [("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.6)]
    out = rank(cands, 10, {"a"}, lambda i: i != "c")
    assert [it.item_id for it in out] == ["b", "d"]


def test_rank_dedups_keeping_the_best_score() -> None:
    cands = [("a", 0.1), ("b", 0.5), ("a", 0.9), ("a", 0.3)]
    assert rank(cands, 10, set(), _always) == (RecItem("a", 0.9), RecItem("b", 0.5))


def test_rank_truncates_to_k() -> None:
    cands = [(f"i{n}", float(n)) for n in range(20)]
    out = rank(cands, 3, set(), _always)
    assert [it.item_id for it in out] == ["i19", "i18", "i17"]


def test_rank_returns_plain_floats_rounded() -> None:
    import numpy as np

    (item,) = rank([("a", np.float32(0.123456789))], 1, set(), _always)
    assert type(item.score) is float
    assert item.score == 0.123457


def test_rank_empty() -> None:
    assert rank([], 5, set(), _always) == ()
    assert rank([("a", 1.0)], 5, {"a"}, _always) == ()


def test_exclusions() -> None:
    state = UserState(history=("h1", "p1"), purchased=("p1", "p2"))
    assert exclusions(state, exclude_history=False) == {"p1", "p2"}
    assert exclusions(state, exclude_history=True) == {"h1", "p1", "p2"}


ITEMS = [f"i{n}" for n in range(15)]
candidates = st.lists(
    st.tuples(st.sampled_from(ITEMS), st.floats(-10, 10, allow_nan=False, allow_infinity=False)),
    max_size=40,
)


@given(
    candidates,
    st.integers(1, 12),
    st.sets(st.sampled_from(ITEMS)),
    st.sets(st.sampled_from(ITEMS)),
)
@settings(max_examples=300)
def test_rank_invariants(
    cands: list[tuple[str, float]], k: int, exclude: set[str], unavailable: set[str]
) -> None:
    out = rank(cands, k, exclude, lambda i: i not in unavailable)
    ids = [it.item_id for it in out]
    eligible = {i for i, _ in cands if i not in exclude and i not in unavailable}
    assert len(ids) == len(set(ids)) == min(k, len(eligible))
    assert not set(ids) & (exclude | unavailable)
    assert set(ids) <= eligible
    scores = [it.score for it in out]
    assert scores == sorted(scores, reverse=True)
    # every item left out scores no better than the last one kept
    if out:
        best = {}
        for i, s in cands:
            best[i] = max(best.get(i, s), s)
        for i in eligible - set(ids):
            assert round(best[i], 6) <= out[-1].score
