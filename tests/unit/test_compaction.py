"""Compaction: the graph rebuilt without deleted items gives the exact top-k of the live items,
changes made during the build are kept, and a revived item is searchable again."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streamrec.ranking.compaction import Compactor
from streamrec.ranking.index import ItemIndex
from streamrec.testing import random_index

DIM = 8


def _exact(index: ItemIndex, ids: list[str], query: np.ndarray, k: int) -> list[str]:
    live = [i for i in ids if index.is_live(i)]
    scores = index.vectors_of(live) @ query
    return [live[j] for j in np.argsort(-scores, kind="stable")[:k]]


def _check_exact(index: ItemIndex, ids: list[str], seed: int) -> None:
    queries = np.random.default_rng(seed).normal(size=(30, DIM)).astype(np.float32)
    for query, hits in zip(queries, index.search(queries, 10), strict=True):
        assert [i for i, _ in hits] == _exact(index, ids, query, 10)


def test_compaction_drops_deleted_items_and_keeps_results_exact() -> None:
    index = random_index(400, DIM, seed=1)
    ids = [f"i{n}" for n in range(400)]
    for n in range(0, 400, 3):
        index.remove(f"i{n}")
    compactor = Compactor(index, ratio=0.2, background=False)
    assert compactor.due() and index.stats().deleted == 134
    assert compactor.tick()
    assert index.stats().deleted == 0 and index.size == 266
    assert index.deleted_ratio() == 0.0 and not compactor.due()
    _check_exact(index, ids, seed=2)
    # a compacted-away item comes back on an upsert; labels never change
    label = int(index.labels_of(["i3"])[0])
    index.upsert("i3", [5.0] * DIM, available=True)
    assert int(index.labels_of(["i3"])[0]) == label and index.is_live("i3")
    assert index.search(np.ones(DIM, np.float32), 1)[0][0][0] == "i3"
    _check_exact(index, ids, seed=3)


def test_below_the_ratio_nothing_happens() -> None:
    index = random_index(100, DIM)
    for n in range(10):
        index.remove(f"i{n}")
    compactor = Compactor(index, ratio=0.2, background=False)
    assert not compactor.tick() and index.stats().deleted == 10


def test_changes_during_a_background_build_are_replayed_at_the_swap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    import streamrec.ranking.compaction as compaction

    index = random_index(300, DIM, seed=4)
    ids = [f"i{n}" for n in range(300)] + [f"n{n}" for n in range(20)]
    for n in range(0, 300, 2):
        index.remove(f"i{n}")
    swapped: list[float] = []
    go = threading.Event()  # the build waits for it: the changes below land during the build
    real_build = compaction.build_graph

    def held_build(*args: Any, **kwargs: Any) -> Any:
        assert go.wait(30), "the test never released the build"
        return real_build(*args, **kwargs)

    monkeypatch.setattr(compaction, "build_graph", held_build)
    compactor = Compactor(index, ratio=0.3, on_done=swapped.append)
    assert not compactor.tick() and compactor.running  # started, not swapped yet
    # meanwhile the old graph serves and the catalog changes
    rng = np.random.default_rng(5)
    for n in range(20):
        index.upsert(f"n{n}", rng.normal(size=DIM).tolist(), available=True)
    index.remove("i1")
    index.upsert("i2", rng.normal(size=DIM).tolist(), available=True)  # revived
    index.upsert("i5", rng.normal(size=DIM).tolist(), available=True)  # moved
    _check_exact(index, ids, seed=6)
    go.set()
    compactor.wait(30)
    assert compactor.tick() and len(swapped) == 1 and not compactor.running
    # i1, deleted after the copy was taken, is deleted in the new graph too, and its place
    # went to one of the items added meanwhile: the new graph holds no deleted item
    assert index.stats().deleted == 0 and index.graph_size == index.size == 170
    assert not compactor.due()  # the next compaction does not start at once
    assert not index.is_live("i1")
    _check_exact(index, ids, seed=7)


def test_ratio_is_validated() -> None:
    with pytest.raises(ValueError, match="ratio"):
        Compactor(random_index(5, DIM), ratio=0.0)


def test_a_failed_build_keeps_the_old_graph_and_waits_before_retrying(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streamrec.ranking.compaction as compaction

    index = random_index(100, DIM)
    ids = [f"i{n}" for n in range(100)]
    for n in range(50):
        index.remove(f"i{n}")

    def broken(*args: object, **kwargs: object) -> None:
        raise MemoryError("no room for a second graph")

    monkeypatch.setattr(compaction, "build_graph", broken)
    compactor = Compactor(index, ratio=0.2, background=False)
    assert not compactor.tick() and not compactor.running
    assert index.stats().deleted == 50  # the old graph still serves
    index.remove("i60")  # changes are no longer tracked for a dead build
    _check_exact(index, ids, seed=8)
    assert not compactor.tick()  # not retried at once
