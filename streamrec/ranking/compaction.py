"""Compaction: rebuilding the HNSW graph without its deleted items, aside, then swapping it in.

Deleted items stay in an hnswlib graph (marked deleted): they cost memory and every search
still walks them. New items take their places (``streamrec.ranking.index``), so under steady
churn they do not pile up; when deletes outrun new items and exceed ``ratio`` of the graph,
``Compactor.tick`` copies the live labels and vectors (``ItemIndex.begin_compaction``) and
builds a new graph from them on a thread of its own, with the same labels (the ranker's label
arrays stay valid). The index keeps serving the old graph meanwhile and notes every label
changed since the copy; a later ``tick`` (the worker calls it between two batches) replays
those changes onto the new graph, deletes first so that the items added meanwhile take the
deleted places, and swaps it in (``ItemIndex.finish_compaction``). A search runs on one graph
or the other, never on a half-built one. Deleted items keep their vectors and ids (histories
still name them); an upsert that revives one adds it to the graph again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import hnswlib
import numpy as np

from streamrec.ranking.index import CompactionInput, ItemIndex, new_graph

log = logging.getLogger(__name__)

BUILD_THREADS = 1  # the build must not starve the loop's thread of CPU
RETRY_AFTER_S = 60.0  # a failed build is not tried again sooner


def build_graph(job: CompactionInput, dim: int, threads: int = BUILD_THREADS) -> hnswlib.Index:
    """A fresh graph of ``job``'s labels and vectors (no shared state: safe on a thread)."""
    graph = new_graph(dim, max(16, int(len(job.labels) * 1.25)), job.m, job.ef_construction)
    if len(job.labels):
        graph.add_items(job.vectors, job.labels, num_threads=threads)
    return graph


class Compactor:
    """Starts a compaction when the deleted ratio passes ``ratio``; swaps it in when built.

    Args:
        index: the served index.
        ratio: compact when deleted / (graph items) exceeds this (0 < ratio <= 1).
        on_done: called with the seconds a finished compaction took (metrics).
        background: build on a thread (False: build inside ``tick``, for tests).
    """

    def __init__(
        self,
        index: ItemIndex,
        ratio: float,
        on_done: Callable[[float], None] = lambda seconds: None,
        background: bool = True,
    ) -> None:
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        self.index = index
        self.ratio = ratio
        self.on_done = on_done
        self.background = background
        self._thread: threading.Thread | None = None
        self._job: CompactionInput | None = None
        self._built: hnswlib.Index | None = None
        self._failed: BaseException | None = None
        self._started = 0.0
        self._retry_at = 0.0

    @property
    def running(self) -> bool:
        """A compaction is being built (or built and not yet swapped in)."""
        return self._job is not None

    def due(self) -> bool:
        """The deleted share of the graph is above ``ratio``."""
        return self.index.stats().deleted > 0 and self.index.deleted_ratio() > self.ratio

    def tick(self) -> bool:
        """Between two batches: swap in a finished build, or start one when due.

        Returns:
            True when a compacted graph was swapped in by this call.
        """
        if self._job is None:
            if time.monotonic() < self._retry_at or not self.due():
                return False
            self._start()
        if self._thread is not None and self._thread.is_alive():
            return False
        return self._finish()

    def _start(self) -> None:
        stats = self.index.stats()
        log.info("compacting the index: %d live, %d deleted", stats.live, stats.deleted)
        self._started = time.perf_counter()
        job = self._job = self.index.begin_compaction()
        if self.background:
            self._thread = threading.Thread(
                target=self._build, args=(job,), name="index-compaction", daemon=True
            )
            self._thread.start()
        else:
            self._build(job)

    def _build(self, job: CompactionInput) -> None:
        try:
            self._built = build_graph(job, self.index.dim)
        except BaseException as exc:  # reported on the loop's thread by ``_finish``
            self._failed = exc

    def _finish(self) -> bool:
        job, built, failed = self._job, self._built, self._failed
        self._job = self._built = self._failed = self._thread = None
        if built is None or job is None:
            self.index.abandon_compaction()
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            log.error("index compaction failed (next try in %.0fs): %r", RETRY_AFTER_S, failed)
            return False
        self.index.finish_compaction(np.asarray(job.labels), built)
        seconds = time.perf_counter() - self._started
        log.info("index compacted in %.1fs: %d items in the graph", seconds, self.index.size)
        self.on_done(seconds)
        return True

    def wait(self, timeout_s: float | None = None) -> None:
        """Wait for a running build (tests, shutdown)."""
        if self._thread is not None:
            self._thread.join(timeout_s)
