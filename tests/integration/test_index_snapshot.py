"""Index snapshots through the real broker.

A worker follows a catalog (new items with vectors, deletes, an unavailable item) and writes a
snapshot at shutdown. While it is down the catalog changes again. The next worker loads the
snapshot, reads the catalog only from the offsets it covers (it applies exactly the records
produced since) and serves the same index as a worker that rebuilt everything from the whole
topic, the later upserts and deletes included. Corrupt snapshots, and one whose offsets lie
beyond the topic's end, are ignored (logged, counted) and the worker rebuilds from the topic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import producer, read_topic, running_worker, scrape, send_events

from streamrec.core.events import CatalogOp, Event
from streamrec.io.clients import ensure_topics
from streamrec.io.codec import encode_catalog
from streamrec.ops.settings import Settings
from streamrec.ranking.index import ItemIndex
from streamrec.ranking.modelfiles import read_model_dir
from streamrec.ranking.snapshot import NewItemState, list_snapshots, write_snapshot
from streamrec.worker.snapshots import snapshot_identity

pytestmark = pytest.mark.broker

UPDATES = "streamrec_catalog_updates_total"


def _send_catalog(settings: Settings, ops: list[CatalogOp]) -> None:
    prod = producer(settings, linger_ms=0)
    for op in ops:
        # one record per batch: the embedded broker's end offsets are only right that way
        prod.send(settings.items_topic, key=op.item_id.encode(), value=encode_catalog(op)).get(30)
    prod.close()


def _vector(rng: np.random.Generator, dim: int) -> tuple[float, ...]:
    return tuple(float(x) for x in rng.normal(size=dim))


def _applied(metrics: dict) -> float:
    return sum(v for (name, _), v in metrics.items() if name == UPDATES)


def _same_index(a: ItemIndex, b: ItemIndex, ids: list[str]) -> None:
    """The same items, liveness and vectors, and both serve them: each search finds the exact
    top 10 of the live items, but for what an approximate search may miss. (Their graphs
    differ: new items took deleted items' places in a different order, and a graph with no
    deleted item left is searched with the usual early stop, so equal lists are not due.)"""
    assert [a.is_live(i) for i in ids] == [b.is_live(i) for i in ids]
    np.testing.assert_array_equal(a.vectors_of(ids), b.vectors_of(ids))
    live = [i for i in ids if a.is_live(i)]
    queries = np.random.default_rng(3).normal(size=(20, a.dim)).astype(np.float32)
    exact = [
        {live[j] for j in np.argsort(-(a.vectors_of(live) @ q), kind="stable")[:10]}
        for q in queries
    ]
    for index in (a, b):
        found = [{i for i, _ in hits} for hits in index.search(queries, 10)]
        assert all(len(f) == 10 and all(index.is_live(i) for i in f) for f in found)
        recall = np.mean([len(f & e) / 10 for f, e in zip(found, exact, strict=True)])
        assert recall >= 0.95, recall


def test_a_worker_restarts_from_its_snapshot_and_catches_up_from_the_covered_offsets(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    snaps = tmp_path / "snapshots"
    settings = settings.model_copy(
        update={"index_snapshot_dir": snaps, "index_snapshot_interval_s": 3600.0}
    )
    ensure_topics(settings, partitions=2)
    files = read_model_dir(settings.model_dir)
    trained, dim = files.item_ids, files.meta.dim
    rng = np.random.default_rng(1)
    first = [CatalogOp(f"new-{n}", "upsert", True, n, _vector(rng, dim)) for n in range(12)]
    first += [CatalogOp(trained[n], "delete", False, 20 + n) for n in range(4)]
    first.append(CatalogOp("new-off", "upsert", False, 30, _vector(rng, dim)))
    _send_catalog(settings, first)

    with running_worker(settings) as one:
        assert one.worker.model.snapshot is None  # nothing to load yet
        assert _applied(scrape(one.url)) == len(first)
    assert [p.name for p in list_snapshots(snaps)], "a snapshot is written at shutdown"

    later = [
        CatalogOp("late-1", "upsert", True, 40, _vector(rng, dim)),  # a new item
        CatalogOp("new-3", "delete", False, 41),  # a delete
        CatalogOp("new-4", "upsert", True, 42, _vector(rng, dim)),  # a moved vector
        CatalogOp(trained[1], "upsert", True, 43),  # a revival
    ]
    _send_catalog(settings, later)
    ids = [*trained, *(f"new-{n}" for n in range(12)), "new-off", "late-1"]

    with running_worker(settings) as two:
        assert two.worker.model.snapshot is not None
        metrics = scrape(two.url)
        assert _applied(metrics) == len(later), "only the records after the snapshot"
        assert metrics[("streamrec_index_snapshot_load_duration_seconds", ())] > 0
        index = two.worker.model.index
        assert index.is_live("late-1") and index.is_live(trained[1])
        assert not index.is_live("new-3") and not index.is_live("new-off")
        # and it serves: a list for a user who clicked items the catalog added
        send_events(settings, [Event("probe", "u-probe", "new-4", "click", 1_700_000_000_000)])
        (rec,) = read_topic(settings.bootstrap_servers, settings.recs_topic, 1, 30)
        assert rec.value

    rebuilt_settings = settings.model_copy(update={"index_snapshot_dir": None})
    with running_worker(rebuilt_settings) as full:
        assert _applied(scrape(full.url)) == len(first) + len(later)
        _same_index(index, full.worker.model.index, ids)

    # corrupt snapshots are never trusted: rebuilt from the whole topic, the same index
    for path in list_snapshots(snaps):
        graph = path / "graph.hnsw"
        data = bytearray(graph.read_bytes())
        data[len(data) // 2] ^= 0xFF
        graph.write_bytes(bytes(data))
    with running_worker(settings) as three:
        metrics = scrape(three.url)
        assert three.worker.model.snapshot is None
        assert metrics[("streamrec_index_snapshots_rejected_total", (("reason", "corrupt"),))] >= 1
        assert _applied(metrics) == len(first) + len(later)
        _same_index(index, three.worker.model.index, ids)
    assert "ignored (corrupt)" in caplog.text


def test_a_snapshot_beyond_the_topic_is_refused(settings: Settings, tmp_path: Path) -> None:
    snaps = tmp_path / "snapshots"
    settings = settings.model_copy(
        update={"index_snapshot_dir": snaps, "index_snapshot_interval_s": 3600.0}
    )
    ensure_topics(settings, partitions=1)
    files = read_model_dir(settings.model_dir)
    _send_catalog(settings, [CatalogOp(files.item_ids[0], "delete", False, 1)])
    # a snapshot of this model and topic whose offsets the topic never reached (recreated?)
    index = ItemIndex(files.item_ids, files.item_vectors)
    index.remove(files.item_ids[5])
    identity = snapshot_identity(settings, files)
    write_snapshot(snaps, identity, index, NewItemState(), {"0": 1000}, 1.0)
    with running_worker(settings) as worker:
        metrics = scrape(worker.url)
        assert metrics[("streamrec_index_snapshots_rejected_total", (("reason", "offsets"),))] == 1
        served = worker.worker.model.index
        assert not served.is_live(files.item_ids[0]), "the whole topic was read"
        assert served.is_live(files.item_ids[5]), "nothing of the refused snapshot is kept"
        assert _applied(metrics) == 1
