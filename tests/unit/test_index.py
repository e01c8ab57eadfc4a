"""The item index: exact top-k on small data, catalog changes, exclusions, growth."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.errors import ItemIndexError
from streamrec.ranking.index import ItemIndex
from streamrec.testing import random_index

DIM = 8


def _brute(
    index: ItemIndex, query: np.ndarray, k: int, skip: set[str], ids: list[str] | None = None
) -> list[str]:
    ids = ids or [f"i{n}" for n in range(200) if f"i{n}" in index]
    live = [i for i in ids if index.is_live(i) and i not in skip]
    scores = index.vectors_of(live) @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [live[j] for j in order]


def _queries(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_search_matches_brute_force(k: int) -> None:
    index = random_index(100, DIM, seed=3)
    queries = _queries(10, seed=4)
    for query, hits in zip(queries, index.search(queries, k), strict=True):
        assert [i for i, _ in hits] == _brute(index, query, k, set())
        want = index.vectors_of([i for i, _ in hits]) @ query
        np.testing.assert_allclose([s for _, s in hits], want, rtol=1e-4, atol=1e-5)


def test_search_accepts_a_single_1d_query() -> None:
    index = random_index(30, DIM)
    (hits,) = index.search(_queries(1, 0)[0], 3)
    assert len(hits) == 3


@given(st.integers(0, 10_000), st.integers(1, 10), st.sets(st.integers(0, 39), max_size=30))
@settings(max_examples=40, deadline=None)
def test_exclusion_is_honoured_and_still_k_results(seed: int, k: int, skip_n: set[int]) -> None:
    index = random_index(40, DIM, seed=seed % 7)
    skip = {f"i{n}" for n in skip_n}
    query = _queries(1, seed)[0]
    (hits,) = index.search(query[None, :], k, [skip])
    ids = [i for i, _ in hits]
    assert not set(ids) & skip
    assert len(ids) == min(k, 40 - len(skip))
    assert ids == _brute(index, query, k, skip)


def test_exclude_needs_one_set_per_query() -> None:
    index = random_index(10, DIM)
    with pytest.raises(ItemIndexError):
        index.search(_queries(2, 0), 3, [set()])


def test_upsert_new_item_with_vector_is_found_at_once() -> None:
    index = random_index(50, DIM, seed=1)
    vec = 3.0 * _queries(1, 9)[0]  # large norm: certainly the best match for itself
    index.upsert("new", vec.tolist(), available=True)
    assert "new" in index and index.is_live("new")
    assert index.size == 51
    (hits,) = index.search(vec, 1)
    assert hits[0][0] == "new"
    assert hits[0][1] == pytest.approx(float(vec @ vec), rel=1e-4)


def test_upsert_without_vector_uses_the_centroid() -> None:
    index = random_index(20, DIM, seed=2)
    all_vecs = index.vectors_of([f"i{n}" for n in range(20)])
    index.upsert("cold", None, available=True)
    np.testing.assert_allclose(index.vectors_of(["cold"])[0], all_vecs.mean(axis=0), rtol=1e-5)
    centroid = all_vecs.mean(axis=0)
    (hits,) = index.search(centroid, 21)
    assert "cold" in [i for i, _ in hits]


def test_upsert_unavailable_is_known_but_not_searchable() -> None:
    index = random_index(20, DIM)
    vec = 5.0 * _queries(1, 1)[0]
    index.upsert("hidden", vec.tolist(), available=False)
    assert "hidden" in index and not index.is_live("hidden")
    (hits,) = index.search(vec, 20)
    assert "hidden" not in [i for i, _ in hits]


def test_remove_hides_an_item_and_reupsert_shows_it_again() -> None:
    index = random_index(30, DIM, seed=5)
    vec = index.vectors_of(["i7"])[0]
    assert index.search(vec, 1)[0][0][0] == "i7"
    index.remove("i7")
    assert not index.is_live("i7")
    assert index.size == 29
    (hits,) = index.search(vec, 29)
    assert "i7" not in [i for i, _ in hits]
    assert len(hits) == 29
    index.upsert("i7", None, available=True)
    assert index.is_live("i7")
    assert index.search(vec, 1)[0][0][0] == "i7"


def test_remove_unknown_item_is_a_no_op() -> None:
    index = random_index(10, DIM)
    index.remove("nope")
    assert index.size == 10


def test_update_vector_of_a_live_item_moves_it() -> None:
    index = random_index(30, DIM, seed=6)
    target = 4.0 * _queries(1, 11)[0]
    index.upsert("i0", target.tolist(), available=True)
    (hits,) = index.search(target, 1)
    assert hits[0][0] == "i0"
    assert hits[0][1] == pytest.approx(float(target @ target), rel=1e-4)


def test_reupsert_after_remove_with_new_vector_uses_the_new_vector() -> None:
    index = random_index(50, DIM, seed=1)
    index.remove("i3")
    vec = -4.0 * index.vectors_of(["i3"])[0]
    index.upsert("i3", vec.tolist(), available=True)
    (hits,) = index.search(vec, 1)
    assert hits[0][0] == "i3"


def test_wrong_vector_dim_raises() -> None:
    index = random_index(10, DIM)
    with pytest.raises(ItemIndexError):
        index.upsert("bad", [1.0] * (DIM - 1), available=True)
    with pytest.raises(ItemIndexError):
        index.upsert("i1", [1.0] * (DIM + 1), available=True)
    assert "bad" not in index


def test_constructor_rejects_mismatched_vectors() -> None:
    with pytest.raises(ItemIndexError):
        ItemIndex(["a", "b"], np.zeros((3, DIM), np.float32))
    with pytest.raises(ItemIndexError):
        ItemIndex(["a"], np.zeros(DIM, np.float32))


def test_search_with_wrong_query_dim_raises() -> None:
    index = random_index(10, DIM)
    # A view into a larger buffer: hnswlib's over-read stays inside memory we own.
    buffer = np.ones((1, 2 * DIM), np.float32)
    with pytest.raises(ItemIndexError):
        index.search(buffer[:, : DIM - 1], 2)


def test_many_deletions_still_return_exact_results() -> None:
    index = random_index(120, DIM, seed=8)
    for n in range(110):
        index.remove(f"i{n}")
    assert index.size == 10
    query = _queries(1, 3)[0]
    (hits,) = index.search(query, 5)
    assert [i for i, _ in hits] == _brute(index, query, 5, set())
    (hits,) = index.search(query, 50)
    assert sorted(i for i, _ in hits) == sorted(f"i{n}" for n in range(110, 120))
    (hits,) = index.search(query, 5, [{"i110", "i111", "i112", "i113", "i114", "i115", "i116"}])
    assert sorted(i for i, _ in hits) == ["i117", "i118", "i119"]


def test_all_removed_returns_empty() -> None:
    index = random_index(5, DIM)
    for n in range(5):
        index.remove(f"i{n}")
    assert index.search(_queries(1, 0), 3) == [[]]


def test_growth_beyond_initial_capacity() -> None:
    index = random_index(10, DIM, seed=9)
    rng = np.random.default_rng(10)
    new = rng.normal(size=(100, DIM)).astype(np.float32)
    for n, vec in enumerate(new):
        index.upsert(f"n{n}", vec.tolist(), available=True)
    assert index.size == 110
    every = [f"i{n}" for n in range(10)] + [f"n{n}" for n in range(100)]
    for query in _queries(5, 12):
        (hits,) = index.search(query, 10)
        assert [i for i, _ in hits] == _brute(index, query, 10, set(), every)
    np.testing.assert_allclose(index.vectors_of(["n99"])[0], new[99])
    (hits,) = index.search(_queries(1, 1), 110)
    assert len({i for i, _ in hits}) == 110


def test_sample_live_is_uniform_over_live_unexcluded_items() -> None:
    index = random_index(n_items=30, dim=DIM, seed=0)
    index.remove("i3")
    rng = np.random.default_rng(0)
    counts = {i: 0 for i in (f"i{n}" for n in range(30))}
    for _ in range(3000):
        drawn = index.sample_live(rng, 4, exclude={"i0", "i1"})
        assert len(set(drawn)) == 4
        for i in drawn:
            counts[i] += 1
    assert counts["i0"] == counts["i1"] == counts["i3"] == 0
    eligible = [c for i, c in counts.items() if i not in {"i0", "i1", "i3"}]
    assert min(eligible) > 0.7 * 12000 / 27 and max(eligible) < 1.3 * 12000 / 27
    assert index.live_count(exclude={"i0", "i3", "nope"}) == 28


def test_sample_live_falls_back_when_most_items_are_excluded() -> None:
    index = random_index(n_items=200, dim=DIM, seed=0)
    keep = {"i7", "i70", "i170"}
    exclude = {f"i{n}" for n in range(200)} - keep
    rng = np.random.default_rng(1)
    assert set(index.sample_live(rng, 3, exclude)) == keep
    with pytest.raises(ValueError, match="eligible"):
        index.sample_live(rng, 4, exclude)


def _one_by_one(index: ItemIndex, queries: np.ndarray, k: int, skips: list[set[str]]) -> list:
    return [index.search(q[None, :], k, [skip])[0] for q, skip in zip(queries, skips, strict=True)]


@pytest.mark.parametrize("k", [1, 7, 40, 140])  # 140 > ef_search: beams differ per query
def test_a_batch_finds_exactly_what_each_query_finds_alone(k: int) -> None:
    index = random_index(300, DIM, seed=4)
    for n in range(25):  # identical vectors: distances tie across the cuts
        index.upsert(f"c{n}", None, available=True)
    for n in range(0, 300, 9):
        index.remove(f"i{n}")
    rng = np.random.default_rng(5)
    queries = np.vstack([_queries(30, 6), np.repeat(index.centroid[None, :], 6, axis=0)])
    known = [f"i{n}" for n in range(300)] + [f"c{n}" for n in range(25)] + ["unknown"]
    skips = [set(rng.choice(known, size=int(rng.integers(0, 60)), replace=False)) for _ in queries]
    batch = index.search(queries, k, skips)
    assert batch == _one_by_one(index, queries, k, skips)  # ids, order and float scores
    labels = index.search_labels(queries, k, skips)
    assert [
        list(zip(index.ids_of(lab.tolist()), s.tolist(), strict=True)) for lab, s in labels
    ] == batch


def test_a_batch_after_many_deletions_falls_back_like_single_queries() -> None:
    index = random_index(150, DIM, seed=8)
    for n in range(140):
        index.remove(f"i{n}")
    queries = _queries(8, 3)
    skips = [set(), {"i141"}, {"i140", "i149"}, set(), {"nope"}, set(), {"i145"}, set()]
    for k in (3, 9, 30):
        assert index.search(queries, k, skips) == _one_by_one(index, queries, k, skips)


def test_size_is_counted_through_every_change() -> None:
    index = random_index(20, DIM, seed=1)
    rng = np.random.default_rng(2)
    for step in range(300):
        item = f"i{rng.integers(40)}"
        if rng.random() < 0.4:
            index.remove(item)
        else:
            vec = None if rng.random() < 0.5 else rng.normal(size=DIM).tolist()
            index.upsert(item, vec, available=bool(rng.random() < 0.7))
        live = sum(index.is_live(f"i{n}") for n in range(40))
        assert index.size == index.stats().live == live, step


def test_labels_ids_and_live_masks_agree() -> None:
    index = random_index(10, DIM)
    index.remove("i4")
    labels = index.labels_of(["i3", "nope", "i4"])
    assert labels[1] == -1 and index.ids_of([labels[0], labels[2]]) == ["i3", "i4"]
    assert index.live_mask(labels).tolist() == [True, False, False]
    assert index.known_labels(["nope", "i9"]).tolist() == [index.labels_of(["i9"])[0]]
    np.testing.assert_array_equal(index.vectors_at(labels[[0]]), index.vectors_of(["i3"]))


def test_id_order_follows_the_ids_as_items_arrive() -> None:
    index = random_index(30, DIM, seed=3)
    rng = np.random.default_rng(4)
    index.id_order(np.arange(3))  # built now, then kept up to date
    for m in range(2, 80):  # each lands just before "i11", halving one gap: it is used up
        index.upsert("i1" + "0" * m, None, available=True)
    for n in range(200):
        index.upsert(f"i{rng.integers(1000)}x{n}", None, available=bool(n % 2))
    ids = index.ids_of(range(index.n_labels))
    order = index.id_order(np.arange(index.n_labels)).tolist()
    assert sorted(range(len(ids)), key=order.__getitem__) == sorted(
        range(len(ids)), key=ids.__getitem__
    )


def test_a_batch_with_distances_tied_across_its_cuts_still_matches_single_queries() -> None:
    """hnswlib keeps an arbitrary part of a tied run: such queries are searched alone."""
    index = random_index(300, DIM, seed=4)
    top = _queries(1, 1)[0]
    for n in range(40):  # 40 copies of the best match for ``top``: one long run of ties
        index.upsert(f"c{n}", (3 * top).tolist(), available=True)
    skips = [{f"i{m}" for m in range(n)} for n in (0, 3, 9, 20, 31)]  # fetch 5, 8, .. 36
    queries = np.repeat(top[None, :], len(skips), axis=0)
    assert index.search(queries, 5, skips) == _one_by_one(index, queries, 5, skips)


def test_reserve_makes_room_without_changing_results() -> None:
    index = random_index(50, 8, seed=4)
    before = index.search(np.ones((1, 8), np.float32), 5)
    index.reserve(100)
    assert index.n_labels == 50 and index.size == 50
    assert index.search(np.ones((1, 8), np.float32), 5) == before
    for n in range(100):  # within the room: the graph is not grown again
        index.upsert(f"new{n}", [5.0 if n == 0 else 0.0] * 8, True)
    assert index.size == 150 and index.is_live("new99")
    assert index.search(np.ones((1, 8), np.float32), 1)[0][0][0] == "new0"


def test_update_vectors_in_one_call_equals_one_upsert_each_and_keeps_hidden_items_hidden() -> None:
    one, batched = random_index(n_items=60, dim=DIM, seed=4), random_index(60, dim=DIM, seed=4)
    for index in (one, batched):
        index.remove("i5")
    ids = ["i3", "i5", "i9"]
    vectors = _queries(3, seed=9) * 3
    for item_id, vector in zip(ids, vectors, strict=True):
        one.upsert(item_id, vector.tolist(), available=one.is_live(item_id))
    batched.update_vectors(ids, vectors)
    np.testing.assert_array_equal(batched.vectors_of(ids), one.vectors_of(ids))
    assert not batched.is_live("i5") and batched.size == one.size == 59
    for query in vectors:
        assert [i for i, _ in batched.search(query, 5)[0]] == [
            i for i, _ in one.search(query, 5)[0]
        ]
        assert "i5" not in [i for i, _ in batched.search(query, 59)[0]]
    assert batched.search(vectors[0], 1)[0][0][0] == "i3"
    batched.upsert("i5", None, available=True)  # back: with the vector written while hidden
    assert batched.search(vectors[1], 1)[0][0][0] == "i5"
    with pytest.raises(ItemIndexError):
        batched.update_vectors(["nope"], vectors[:1])
    with pytest.raises(ItemIndexError):
        batched.update_vectors(ids, vectors[:2])


class _HeldGraph:
    """An hnswlib graph whose ``add_items`` waits for ``release`` (or fails), else the same."""

    def __init__(self, graph: Any, fail: bool = False) -> None:
        self._graph = graph
        self.fail = fail
        self.release = threading.Event()
        self.writing = threading.Event()

    def add_items(self, *args: Any, **kwargs: Any) -> None:
        self.writing.set()
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("no room")
        self._graph.add_items(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._graph, name)


def test_a_background_graph_write_returns_at_once_and_the_next_search_waits_for_it() -> None:
    sync, index = random_index(n_items=60, dim=DIM, seed=4), random_index(60, dim=DIM, seed=4)
    ids = ["i3", "i9"]
    vectors = _queries(2, seed=9) * 3
    sync.update_vectors(ids, vectors)
    held = _HeldGraph(index._graph)
    index._graph = held
    index.update_vectors(ids, vectors, background=True)
    assert held.writing.wait(10)  # the write is under way, and update_vectors has returned
    np.testing.assert_array_equal(index.vectors_of(ids), sync.vectors_of(ids))  # the array: now
    threading.Timer(0.2, held.release.set).start()
    for query in vectors:  # the first search waits for the write, then sees it
        assert index.search(query, 5) == sync.search(query, 5)
    assert index._writer is None


def test_a_failed_background_graph_write_is_raised_at_the_next_use_of_the_graph() -> None:
    index = random_index(n_items=20, dim=DIM, seed=4)
    held = _HeldGraph(index._graph, fail=True)
    index._graph = held
    held.release.set()
    index.update_vectors(["i1"], _queries(1, seed=2), background=True)
    with pytest.raises(ItemIndexError, match="graph write failed"):
        index.search(_queries(1, seed=3), 3)
    held.fail = False
    assert len(index.search(_queries(1, seed=3), 3)[0]) == 3  # raised once; the index serves on


def test_ef_search_can_be_widened_and_is_validated() -> None:
    index = random_index(n_items=200, dim=DIM, seed=5)
    query = _queries(1, seed=6)
    assert index.ef_search == 128
    index.ef_search = 300
    assert index.ef_search == 300
    exact = np.argsort(-(index.vectors_of([f"i{n}" for n in range(200)]) @ query[0]))[:5]
    assert [i for i, _ in index.search(query, 5)[0]] == [f"i{n}" for n in exact.tolist()]
    with pytest.raises(ItemIndexError):
        index.ef_search = 0
