"""Fusion: RRF and weighted score fusion, with property tests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamrec.ranking.fusion import fuse, fuse_arrays, top_positions

ITEMS = st.sampled_from([f"i{n}" for n in range(30)])


def ranked_lists() -> st.SearchStrategy[list[tuple[str, float]]]:
    """A list of distinct items with strictly decreasing scores."""
    return st.lists(ITEMS, unique=True, max_size=15).map(
        lambda ids: [(i, float(len(ids) - r)) for r, i in enumerate(ids)]
    )


SOURCES = st.dictionaries(st.sampled_from(["a", "b", "c"]), ranked_lists(), min_size=1)
WEIGHTS = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(0.01, 10.0), min_size=3)


@given(SOURCES, WEIGHTS, st.sampled_from(["rrf", "score"]))
def test_output_is_the_union_once_sorted(sources, weights, method) -> None:
    fused = fuse(sources, weights, method)
    ids = [f.item_id for f in fused]
    assert len(ids) == len(set(ids))
    assert set(ids) == {i for cands in sources.values() for i, _ in cands}
    keys = [(-f.score, f.item_id) for f in fused]
    assert keys == sorted(keys)
    assert all(f.source in sources for f in fused)


@given(ranked_lists(), st.floats(0.1, 5.0), st.sampled_from(["rrf", "score"]))
def test_a_single_source_keeps_its_order(cands, weight, method) -> None:
    fused = fuse({"a": cands}, {"a": weight}, method)
    ids = [f.item_id for f in fused]
    if method == "score" and len(cands) >= 2:
        assert ids == [i for i, _ in cands]
    if method == "rrf":
        assert ids == [i for i, _ in cands]


@given(SOURCES, WEIGHTS, st.floats(0.1, 10.0), st.sampled_from(["rrf", "score"]))
def test_scaling_every_weight_keeps_the_ranking(sources, weights, scale, method) -> None:
    before = [f.item_id for f in fuse(sources, weights, method)]
    scaled = {s: w * scale for s, w in weights.items()}
    after = [f.item_id for f in fuse(sources, scaled, method)]
    assert before == after


@given(SOURCES, WEIGHTS)
def test_an_item_first_in_every_source_is_first_overall(sources, weights) -> None:
    sources = {
        s: [("top", 99.0), *[c for c in cands if c[0] != "top"]] for s, cands in sources.items()
    }
    assert fuse(sources, weights, "rrf")[0].item_id == "top"
    assert fuse(sources, weights, "score")[0].item_id == "top"


def test_rrf_formula_and_zero_weights() -> None:
    fused = fuse(
        {"a": [("x", 5.0), ("y", 1.0)], "b": [("y", 9.0)], "c": [("z", 1.0)]},
        {"a": 1.0, "b": 2.0, "c": 0.0},
        "rrf",
        rrf_k=1.0,
    )
    got = {f.item_id: (f.score, f.source) for f in fused}
    assert got == {"x": (pytest.approx(0.5), "a"), "y": (pytest.approx(1 / 3 + 1.0), "b")}


def test_score_fusion_normalises_each_source() -> None:
    fused = fuse(
        {"a": [("x", 100.0), ("y", 0.0)], "b": [("y", 0.2), ("x", 0.1)]},
        {"a": 1.0, "b": 3.0},
        "score",
    )
    assert [(f.item_id, f.score) for f in fused] == [("y", 3.0), ("x", 1.0)]


def test_unknown_method_and_negative_k_are_rejected() -> None:
    with pytest.raises(ValueError, match="method"):
        fuse({"a": [("x", 1.0)]}, {"a": 1.0}, "nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rrf_k"):
        fuse({"a": [("x", 1.0)]}, {"a": 1.0}, rrf_k=-1)


# -- the array form (the ranker's per-request path) -----------------------------------------

ANY_LISTS = st.lists(  # repeats allowed, scores with ties
    st.tuples(ITEMS, st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.5, 7.0])), max_size=15
)


def _keyed(cands: list[tuple[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.array([int(i[1:]) for i, _ in cands], dtype=np.int64)
    return keys, np.array([s for _, s in cands], dtype=np.float64)


def _ids(keys: np.ndarray) -> list[str]:
    return [f"i{k}" for k in keys.tolist()]


def _order(keys: np.ndarray) -> np.ndarray:  # integers in the order of the ids "i<k>"
    return np.array([sorted(_ids(np.arange(30))).index(f"i{k}") for k in keys.tolist()])


@given(
    st.dictionaries(st.sampled_from(["ann", "trending", "covisit"]), ANY_LISTS, min_size=1),
    st.dictionaries(
        st.sampled_from(["ann", "trending", "covisit"]),
        st.sampled_from([0.0, 0.5, 1.0, 1.5, 3.0]),  # equal weights make tied sums
        min_size=3,
    ),
    st.sampled_from(["rrf", "score"]),
    st.sampled_from([0.0, 1.0, 60.0]),
    st.booleans(),
)
def test_fuse_arrays_equals_fuse_exactly(sources, weights, method, rrf_k, scratch) -> None:
    expected = fuse(sources, weights, method, rrf_k)
    work = np.full(40, -7, dtype=np.int64) if scratch else None  # stale contents are fine
    got = fuse_arrays(
        {name: _keyed(c) for name, c in sources.items()}, weights, method, rrf_k, work
    )
    assert len(got) == len(expected)
    for n in (0, 1, 3, 10, len(got)):  # every head is the head of the full ranking
        assert got.fused(got.ranked(n, _order), _ids) == expected[:n]  # scores bit-identical


def test_fuse_arrays_rejects_what_fuse_rejects() -> None:
    with pytest.raises(ValueError, match="unknown fusion method"):
        fuse_arrays({"a": _keyed([("i1", 1.0)])}, {"a": 1.0}, "nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rrf_k"):
        fuse_arrays({"a": _keyed([("i1", 1.0)])}, {"a": 1.0}, rrf_k=-1)
    empty = fuse_arrays({"a": _keyed([("i1", 1.0)])}, {"a": 0.0})
    assert len(empty) == 0 and empty.fused(empty.ranked(5, _order), _ids) == []


@given(st.lists(st.sampled_from([0.0, 1.0, 1.0, 2.0, 3.5]), max_size=40), st.integers(0, 45))
def test_top_positions_is_the_head_by_score_then_id(scores, n) -> None:
    keys = np.random.default_rng(len(scores)).permutation(30 + len(scores))[: len(scores)]
    values = np.array(scores, dtype=np.float64)
    got = top_positions(values, n, keys, lambda k: k)  # ids ordered as the keys themselves
    want = sorted(range(len(scores)), key=lambda j: (-scores[j], keys[j]))[:n]
    assert got.tolist() == want


def test_score_of_reads_fused_scores_and_zero_elsewhere() -> None:
    got = fuse_arrays({"a": _keyed([("i5", 2.0), ("i2", 1.0)])}, {"a": 1.0})
    assert got.score_of(np.array([2, 5, 9])).tolist() == [1.0 / 62, 1.0 / 61, 0.0]
