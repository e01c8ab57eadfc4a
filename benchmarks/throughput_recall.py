"""Index quality for ``throughput.py``: recall@k of the HNSW search against exact search.

Exact search is brute-force numpy (inner product over every live item's vector). Two graphs:

* the worker's own index after the run (the trained items plus the catalog applied one record
  at a time from the catalog topic, and the new-item vectors the events wrote), searched with
  ``ItemIndex.search`` at the settings' ``hnsw_ef_search``: the figure held to the bar;
* a graph built in one call from the same vectors with the same ``M`` and
  ``ef_construction``, searched at several ``ef`` values, to show the margin of the choice.

The queries are the encoder's user vectors of the drain's events (what the worker searches).
Not a script: ``throughput.py`` imports it (this folder is on ``sys.path`` then).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import hnswlib
import numpy as np
from harness import say

from streamrec.ops.settings import Settings
from streamrec.ranking.index import ItemIndex

BAR = 0.95
SWEEP_EF = (16, 32, 64, 128, 256)


WORKER_SWEEP_EF = (192, 256)  # the worker's own graph at beams wider than its setting


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the ``k`` best items per query (inner product), best first."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 256):
        scores = queries[start : start + 256] @ vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start : start + 256] = np.take_along_axis(top, order, axis=1)
    return out


def recall(
    settings: Settings,
    index: ItemIndex,
    item_ids: Sequence[str],
    queries: np.ndarray,
    k: int = 10,
    sweep: bool = True,
) -> dict[str, Any]:
    """Recall@k of ``index`` (and of a one-call graph per ef) against exact search."""
    live = [i for i in item_ids if index.is_live(i)]
    vectors = np.ascontiguousarray(index.vectors_of(live), dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    say(f"recall@{k}: {len(queries):,} queries over {len(live):,} items ...")
    truth = exact_top(vectors, queries, k)
    truth_ids = [{live[j] for j in row} for row in truth]
    at_setting = _searched(index, queries, truth_ids, k)
    worker_sweep = []
    setting = index.ef_search
    try:  # the worker's own graph at wider beams: the margin of the chosen ef
        for ef in (e for e in WORKER_SWEEP_EF if e > setting):
            index.ef_search = ef
            worker_sweep.append({"ef": ef, **_searched(index, queries, truth_ids, k)})
    finally:
        index.ef_search = setting
    out: dict[str, Any] = {
        "worker_sweep": worker_sweep,
        "k": k,
        "items": len(live),
        "queries": len(queries),
        "ef": settings.hnsw_ef_search,
        "m": settings.hnsw_m,
        "ef_construction": settings.hnsw_ef_construction,
        **at_setting,
        "sweep": [],
    }
    if sweep:
        out["sweep"] = _sweep(settings, vectors, queries, truth, k)
    return out


def _searched(
    index: ItemIndex, queries: np.ndarray, truth_ids: Sequence[set[str]], k: int
) -> dict[str, float]:
    """Recall@k of ``index.search`` at its current beam, and its µs per query."""
    start = time.perf_counter()
    found = index.search(queries, k)
    seconds = time.perf_counter() - start
    hits = [len(truth_ids[q] & {i for i, _ in row}) for q, row in enumerate(found)]
    return {
        "recall": float(np.mean(hits)) / k,
        "us_per_query": 1e6 * seconds / max(1, len(queries)),
    }


def _sweep(
    settings: Settings, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int
) -> list[dict[str, float]]:
    say(f"recall sweep: one-call graph of {len(vectors):,} items ...")
    graph = hnswlib.Index(space="ip", dim=vectors.shape[1])
    graph.init_index(
        max_elements=len(vectors), M=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction
    )
    start = time.perf_counter()
    graph.add_items(vectors, np.arange(len(vectors)))
    build_s = time.perf_counter() - start
    graph.set_num_threads(1)
    rows = []
    for ef in SWEEP_EF:
        graph.set_ef(max(ef, k))
        start = time.perf_counter()
        labels, _ = graph.knn_query(queries, k=k)
        seconds = time.perf_counter() - start
        hits = [len(set(truth[q]) & set(labels[q])) for q in range(len(queries))]
        rows.append(
            {
                "ef": ef,
                "recall": float(np.mean(hits)) / k,
                "us_per_query": 1e6 * seconds / max(1, len(queries)),
                "build_s": build_s,
            }
        )
    return rows
