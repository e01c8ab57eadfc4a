"""New items take deleted items' places in the graph (hnswlib's replace-deleted): under steady
churn the graph does not grow, searches never return a deleted item, an item whose place was
taken comes back on an upsert, and a snapshot keeps all of it (also one whose graph was saved
without the option)."""

from __future__ import annotations

from pathlib import Path

import hnswlib
import numpy as np

from streamrec.ranking.index import ItemIndex
from streamrec.ranking.snapshot import GRAPH, NewItemState, SnapshotIdentity, load_snapshot
from streamrec.ranking.snapshot import write_snapshot as write
from streamrec.testing import random_index

DIM = 8
ID = SnapshotIdentity("model-v1", DIM, "streamrec.items")


def _exact(index: ItemIndex, ids: list[str], query: np.ndarray, k: int) -> list[str]:
    live = [i for i in ids if index.is_live(i)]
    scores = index.vectors_of(live) @ query
    return [live[j] for j in np.argsort(-scores, kind="stable")[:k]]


def _churn(index: ItemIndex, ids: list[str], rounds: int, seed: int) -> None:
    """Each round: one live item deleted, one new item added (the live count stays)."""
    rng = np.random.default_rng(seed)
    live = [i for i in ids if index.is_live(i)]
    for _ in range(rounds):
        gone = int(rng.integers(len(live)))
        index.remove(live[gone])
        new = f"n{len(ids)}"
        ids.append(new)
        index.upsert(new, rng.normal(size=DIM).tolist(), available=True)
        live[gone] = new


def test_steady_churn_keeps_the_graph_size_and_searches_skip_deleted_items() -> None:
    index = random_index(200, DIM, seed=1)
    ids = [f"i{n}" for n in range(200)]
    _churn(index, ids, rounds=600, seed=2)  # three times the catalog replaced
    assert index.size == 200 and index.graph_size == 200
    assert index.stats().deleted == 0 and index.deleted_ratio() == 0.0
    assert index.n_labels == 800  # labels are never reused: histories keep naming old items
    queries = np.random.default_rng(3).normal(size=(40, DIM)).astype(np.float32)
    for query, hits in zip(queries, index.search(queries, 10), strict=True):
        found = [i for i, _ in hits]
        assert all(index.is_live(i) for i in found)
        assert found == _exact(index, ids, query, 10)


def test_deletes_without_new_items_stay_in_the_graph_until_new_items_take_their_places() -> None:
    index = random_index(100, DIM, seed=4)
    for n in range(30):
        index.remove(f"i{n}")
    assert index.graph_size == 100 and index.stats().deleted == 30
    for n in range(10):
        index.upsert(f"n{n}", None, available=True)  # cold-start vector
    assert index.graph_size == 100 and index.stats().deleted == 20
    for n in range(10, 40):
        index.upsert(f"n{n}", None, available=n % 2 == 0)
    # an unavailable new item takes a place and leaves it deleted: the 15 available ones used
    # up 15 of the 20 places
    assert index.graph_size == 100 and index.stats().deleted == 5 and index.size == 95
    for n in range(40, 50):
        index.upsert(f"n{n}", None, available=True)
    assert index.graph_size == 105 and index.stats().deleted == 0 and index.size == 105


def test_an_item_whose_place_was_taken_comes_back_with_its_new_vector() -> None:
    index = random_index(50, DIM, seed=5)
    ids = [f"i{n}" for n in range(50)]
    index.remove("i7")
    index.upsert("n0", None, available=True)  # the only deleted place: i7's
    assert index.graph_size == 50 and index.stats().deleted == 0
    vector = np.full(DIM, 3.0, np.float32)
    index.upsert("i7", vector.tolist(), available=True)
    assert index.is_live("i7") and index.graph_size == 51
    hits = index.search(vector, 1)[0]
    assert hits[0][0] == "i7" and np.isclose(hits[0][1], float(vector @ vector), rtol=1e-5)
    # deleted while still in its place, moved, then back: the graph has its new vector
    index.remove("i9")
    moved = -vector
    index.upsert("i9", moved.tolist(), available=False)
    assert index.search(moved, 1)[0][0][0] != "i9"
    index.upsert("i9", None, available=True)
    hits = index.search(moved, 1)[0]
    assert hits[0][0] == "i9" and np.isclose(hits[0][1], float(moved @ moved), rtol=1e-5)
    assert [i for i, _ in index.search(moved, 51)[0]] == _exact(index, [*ids, "n0"], moved, 51)


def _snapshot_round_trip(tmp_path: Path, index: ItemIndex) -> ItemIndex:
    path = write(tmp_path, ID, index, NewItemState(), {"0": 1}, 1000.0)
    return load_snapshot(path, ID, ef_search=128).index


def test_snapshot_round_trip_keeps_the_places_and_reuse_goes_on(tmp_path: Path) -> None:
    index = random_index(150, DIM, seed=6)
    ids = [f"i{n}" for n in range(150)]
    _churn(index, ids, rounds=200, seed=7)
    for n in range(150, 170):  # deleted items, some still in the graph
        index.remove(ids[n])
    queries = np.random.default_rng(8).normal(size=(20, DIM)).astype(np.float32)
    loaded = _snapshot_round_trip(tmp_path / "a", index)
    assert loaded.search(queries, 10) == index.search(queries, 10)
    assert loaded.stats() == index.stats() and loaded.graph_size == index.graph_size == 150
    before = loaded.stats()
    assert before.deleted > 0
    _churn(loaded, ids, rounds=100, seed=9)  # reuse still allowed after the restore
    assert loaded.graph_size == 150 and loaded.stats() == before
    for n in range(before.deleted):
        ids.append(f"m{n}")
        loaded.upsert(f"m{n}", None, available=True)
    assert loaded.graph_size == 150 and loaded.stats().deleted == 0 and loaded.size == 150
    for query, hits in zip(queries, loaded.search(queries, 10), strict=True):
        assert [i for i, _ in hits] == _exact(loaded, ids, query, 10)


def test_a_snapshot_whose_graph_was_saved_without_replace_deleted_loads_and_reuses(
    tmp_path: Path,
) -> None:
    index = random_index(80, DIM, seed=10)
    for n in range(10):
        index.remove(f"i{n}")
    path = write(tmp_path, ID, index, NewItemState(), {"0": 1}, 1000.0)
    # the graph as the previous release wrote it: same file, built without the option
    old = hnswlib.Index(space="ip", dim=DIM)
    old.init_index(max_elements=80, M=16, ef_construction=200)
    old.add_items(index.vectors_at(np.arange(80)), np.arange(80))
    for n in range(10):
        old.mark_deleted(n)
    old.save_index(str(path / GRAPH))
    _rehash(path)
    loaded = load_snapshot(path, ID, ef_search=128).index
    assert loaded.stats().deleted == 10
    for n in range(10):
        loaded.upsert(f"n{n}", None, available=True)
    assert loaded.graph_size == 80 and loaded.stats().deleted == 0


def _rehash(path: Path) -> None:
    """Rewrite a snapshot's manifest after a file was replaced (its checksums)."""
    import json

    from streamrec.ranking.snapshot import MANIFEST, _describe, _manifest_digest

    manifest = json.loads((path / MANIFEST).read_text())
    manifest["files"][GRAPH] = _describe(path / GRAPH)
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))
