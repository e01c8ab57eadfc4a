"""Index snapshots: a round trip serves the same results; a corrupt, truncated, foreign or
other-format snapshot is rejected, never trusted, and an older valid one is used instead."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamrec.errors import SnapshotRejected
from streamrec.ranking.index import ItemIndex
from streamrec.ranking.snapshot import (
    MANIFEST,
    NewItemState,
    SnapshotIdentity,
    list_snapshots,
    load_newest,
    load_snapshot,
    write_snapshot,
)
from streamrec.testing import random_index

DIM = 8
ID = SnapshotIdentity("model-v1", DIM, "streamrec.items")


def _churned_index() -> ItemIndex:
    """An index with catalog history: new items, vector updates, deletes, a revival."""
    index = random_index(300, DIM, seed=5)
    rng = np.random.default_rng(6)
    for n in range(60):
        index.upsert(f"new{n}", rng.normal(size=DIM).tolist(), available=n % 7 != 0)
    for n in range(0, 300, 4):
        index.remove(f"i{n}")
    index.upsert("i8", rng.normal(size=DIM).tolist(), available=True)  # revived, moved
    index.upsert("new3", None, available=False)
    return index


def _results(index: ItemIndex, seed: int = 9) -> list[list[tuple[str, float]]]:
    queries = np.random.default_rng(seed).normal(size=(25, DIM)).astype(np.float32)
    return index.search(queries, 10, [{"i1", "new5"}] * 25)


def _write(root: Path, index: ItemIndex, at: float = 1000.0, **kw: object) -> Path:
    state = NewItemState({"new1": np.ones(index.dim, np.float32)}, ["new1", "new2"])
    identity = kw.pop("identity", ID)
    assert isinstance(identity, SnapshotIdentity)
    return write_snapshot(root, identity, index, state, {"0": 41, "1": 7}, at)


def test_round_trip_serves_the_same_results(tmp_path: Path) -> None:
    index = _churned_index()
    path = _write(tmp_path, index)
    loaded = load_snapshot(path, ID, ef_search=128)
    assert loaded.offsets == {"0": 41, "1": 7}
    assert loaded.created_at == 1000.0
    assert loaded.new_items.vectored == ["new1", "new2"]
    np.testing.assert_array_equal(loaded.new_items.content["new1"], np.ones(DIM))
    got = loaded.index
    assert (got.size, got.n_labels, got.stats()) == (index.size, index.n_labels, index.stats())
    assert _results(got) == _results(index)
    assert [got.is_live(f"i{n}") for n in range(300)] == [
        index.is_live(f"i{n}") for n in range(300)
    ]
    np.testing.assert_array_equal(got.centroid, index.centroid)
    # the loaded index keeps working: a new item, a delete, a revival
    for ix in (index, got):
        ix.upsert("later", [1.0] * DIM, available=True)
        ix.remove("i9")
        ix.upsert("i12", None, available=True)
    assert _results(got, seed=10) == _results(index, seed=10)


def test_only_the_newest_snapshots_are_kept(tmp_path: Path) -> None:
    index = random_index(20, DIM)
    for at in (1.0, 2.0, 3.0):
        _write(tmp_path, index, at=at)
    assert [p.name for p in list_snapshots(tmp_path)] == [
        "index-000000000003000",
        "index-000000000002000",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def _corrupt_graph(path: Path) -> None:
    data = bytearray((path / "graph.hnsw").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "graph.hnsw").write_bytes(bytes(data))


def _truncate_arrays(path: Path) -> None:
    data = (path / "arrays.npz").read_bytes()
    (path / "arrays.npz").write_bytes(data[: len(data) // 3])


def _truncate_manifest(path: Path) -> None:
    text = (path / MANIFEST).read_text()
    (path / MANIFEST).write_text(text[: len(text) // 2])


def _edit_manifest(path: Path) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["offsets"]["0"] = 0  # checksummed: an edit is detected
    (path / MANIFEST).write_text(json.dumps(manifest))


def _drop_ids(path: Path) -> None:
    (path / "ids.json").unlink()


@pytest.mark.parametrize(
    "damage", [_corrupt_graph, _truncate_arrays, _truncate_manifest, _edit_manifest, _drop_ids]
)
def test_a_damaged_snapshot_is_rejected_as_corrupt(tmp_path: Path, damage: object) -> None:
    path = _write(tmp_path, random_index(50, DIM))
    assert callable(damage)
    damage(path)
    with pytest.raises(SnapshotRejected) as err:
        load_snapshot(path, ID, ef_search=64)
    assert err.value.reason == "corrupt"


@pytest.mark.parametrize(
    "other",
    [
        SnapshotIdentity("model-v2", DIM, "streamrec.items"),
        SnapshotIdentity("model-v1", DIM, "other.items"),
        SnapshotIdentity("model-v1", DIM, "streamrec.items", hnsw_m=32),
    ],
)
def test_a_foreign_snapshot_is_rejected(tmp_path: Path, other: SnapshotIdentity) -> None:
    path = _write(tmp_path, random_index(50, DIM), identity=other)
    with pytest.raises(SnapshotRejected) as err:
        load_snapshot(path, ID, ef_search=64)
    assert err.value.reason == "foreign"


def test_a_snapshot_of_another_dimension_is_rejected(tmp_path: Path) -> None:
    other = random_index(50, 4)
    path = _write(tmp_path, other, identity=SnapshotIdentity("model-v1", 4, "streamrec.items"))
    with pytest.raises(SnapshotRejected) as err:
        load_snapshot(path, ID, ef_search=64)
    assert err.value.reason == "foreign"


def test_a_graph_unlike_its_manifest_is_rejected(tmp_path: Path) -> None:
    lying = SnapshotIdentity("model-v1", DIM, "streamrec.items", hnsw_m=8)
    path = _write(tmp_path, random_index(30, DIM), identity=lying)  # the graph has M=16
    with pytest.raises(SnapshotRejected) as err:
        load_snapshot(path, lying, ef_search=64)
    assert err.value.reason == "corrupt"


def test_newest_valid_wins_and_rejections_are_reported(tmp_path: Path) -> None:
    index = random_index(50, DIM)
    _write(tmp_path, index, at=1.0)
    _write(tmp_path, index, at=2.0)
    _corrupt_graph(list_snapshots(tmp_path)[0])
    rejected: list[tuple[str, str]] = []
    loaded = load_newest(tmp_path, ID, 64, lambda p, exc: rejected.append((p.name, exc.reason)))
    assert loaded is not None and loaded.created_at == 1.0
    assert rejected == [("index-000000000002000", "corrupt")]


def test_no_snapshot_or_only_bad_ones_gives_none(tmp_path: Path) -> None:
    assert load_newest(tmp_path / "absent", ID, 64) is None
    _truncate_manifest(_write(tmp_path, random_index(10, DIM)))
    assert load_newest(tmp_path, ID, 64) is None


def test_a_write_cut_short_leaves_nothing_that_loads(tmp_path: Path) -> None:
    """A crash before the rename leaves a hidden temporary directory: never listed, never
    loaded; the previous snapshot stays the newest."""
    index = random_index(40, DIM)
    _write(tmp_path, index, at=1.0)
    partial = tmp_path / ".tmp-index-000000000002000-123"
    partial.mkdir()
    index.save_graph(str(partial / "graph.hnsw"))  # the crash came before arrays and manifest
    assert [p.name for p in list_snapshots(tmp_path)] == ["index-000000000001000"]
    loaded = load_newest(tmp_path, ID, 64)
    assert loaded is not None and loaded.created_at == 1.0
