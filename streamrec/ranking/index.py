"""The item index: hnswlib (inner product) over item vectors, with an id map.

Items from the model keep their trained vectors. Items added by the catalog get the vector
carried on the catalog record, or else the centroid of the trained vectors (a neutral cold-start
vector, searchable at once). Deleted or unavailable items are marked deleted in the graph and
never returned.

The graph reuses the places of deleted items (hnswlib's ``allow_replace_deleted``): a new item,
or one that comes back after its place was taken, takes the place of a deleted one, so under
steady churn (as many deletes as new items) the graph does not grow and compaction
(``streamrec.ranking.compaction``) is left for a catalog that shrinks. hnswlib picks the place;
the item whose place was taken leaves the graph (its vector and label stay here). Which one that
was is not reported, so ``in_graph`` is exact for live labels and "maybe" for deleted ones: a
deleted label is probed (``unmark_deleted`` fails for a label no longer in the graph) when it
matters: when it comes back, and before a snapshot (``export_state``).

Labels (the graph's integer ids, 0.. in order of arrival, never reused) are exposed for the
ranker's array code: ``labels_of``, ``ids_of``, ``live_mask`` and ``search_labels`` (the same
results as ``search``, as arrays). ``search`` runs one ``knn_query`` per group of queries that
share hnswlib's effective beam (``max(ef_search, fetch)``), which gives exactly the per-query
results (see ``search_labels``).

``update_vectors(..., background=True)`` (the pipeline's new-item vectors, rewritten after a
batch is ranked) returns once the vector array holds the new vectors and leaves the graph
write to a thread of its own: hnswlib releases the GIL while it writes, so the rewrite overlaps
the batch's commit and the next batch's reads and counting on the other core. The next use of
the graph, by any method, waits for that write first: only one thread ever touches the graph,
and every search sees every write made before it (at most one write is under way).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import hnswlib
import numpy as np

from streamrec.errors import ItemIndexError


@dataclass(slots=True)
class IndexState:
    """An index's contents besides its graph, per label: what a snapshot saves.

    Attributes:
        ids: item id per label.
        vectors: float32 [len(ids), dim].
        live: bool [len(ids)], searchable items.
        in_graph: bool [len(ids)], labels in the graph (live or marked deleted; a compaction
            leaves deleted labels out, a new item may take a deleted one's place).
        centroid: the cold-start vector (the mean of the trained vectors).
    """

    ids: list[str]
    vectors: np.ndarray
    live: np.ndarray
    in_graph: np.ndarray
    centroid: np.ndarray


@dataclass(frozen=True, slots=True)
class CompactionInput:
    """The live labels and their vectors a compacted graph is built from, and its params."""

    labels: np.ndarray
    vectors: np.ndarray
    m: int
    ef_construction: int


@dataclass(frozen=True, slots=True)
class IndexStats:
    """Counts for metrics: live items and items marked deleted but still in the graph."""

    live: int
    deleted: int


class ItemIndex:
    """Vectors and an HNSW graph for every known item.

    Args:
        item_ids: ids of the trained items.
        vectors: float32 [len(item_ids), dim].
        m: hnswlib graph degree.
        ef_construction: hnswlib build-time beam.
        ef_search: hnswlib query-time beam (raised to k when k is larger).
    """

    _writer: _GraphWrite | None = None  # a background graph write under way (``wait_writes``)

    def __init__(
        self,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        m: int = 16,
        ef_construction: int = 200,
        ef_search: int = 128,
    ) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(item_ids):
            raise ItemIndexError(f"vectors {vectors.shape} do not match {len(item_ids)} ids")
        dim = int(vectors.shape[1])
        graph = new_graph(dim, max(16, len(item_ids)), m, ef_construction)
        if len(item_ids):
            graph.add_items(vectors, np.arange(len(item_ids)))
        n = len(item_ids)
        centroid = vectors.mean(axis=0) if n else np.zeros(dim, np.float32)
        live = np.ones(n, dtype=bool)
        self._setup(IndexState(list(item_ids), vectors.copy(), live, live.copy(), centroid), graph)
        self._ef_search = ef_search
        graph.set_ef(ef_search)

    def _setup(self, state: IndexState, graph: hnswlib.Index) -> None:
        """Take ``state`` (arrays owned from now on) and its graph as this index's contents."""
        self.dim = int(state.vectors.shape[1])
        self._ids = state.ids
        self._label = {item_id: i for i, item_id in enumerate(self._ids)}
        self._vectors = state.vectors
        self._live = state.live
        # a live label is always in the graph; a deleted one maybe (module docstring)
        self._in_graph = state.in_graph
        self._n_live = int(np.count_nonzero(state.live))
        self._id_rank: _IdRank | None = None  # built on first use (``id_order``)
        self.centroid = state.centroid
        self._graph = graph
        self._dirty: set[int] | None = None  # labels changed while a compaction builds

    @property
    def _graph(self) -> hnswlib.Index:
        """The hnswlib graph, once a background write (``update_vectors``) is done with it."""
        self.wait_writes()
        return self._hnsw

    @_graph.setter
    def _graph(self, graph: hnswlib.Index) -> None:
        self.wait_writes()
        self._hnsw = graph

    def wait_writes(self) -> None:
        """Wait for the graph write under way, if any (``update_vectors(background=True)``).

        Raises:
            ItemIndexError: that write failed (the array holds the new vectors, the graph
                may not: the items are served with their previous graph vectors).
        """
        writer = self._writer
        if writer is not None:
            writer.join()  # safe from any thread (a metrics scrape may wait too)
            if self._writer is writer:
                self._writer = None
                writer.raise_error()

    @classmethod
    def from_state(cls, state: IndexState, graph: hnswlib.Index, ef_search: int) -> ItemIndex:
        """An index from saved contents and their graph (``export_state``, a snapshot); the
        graph must allow replacing deleted items (``load_index(..., allow_replace_deleted=True)``).

        Raises:
            ItemIndexError: the arrays and the graph do not agree.
        """
        n = len(state.ids)
        vectors = state.vectors
        if (
            vectors.ndim != 2
            or vectors.shape[0] != n
            or state.centroid.shape != (vectors.shape[1],)
        ):
            raise ItemIndexError(f"vectors {vectors.shape} do not match {n} ids")
        if state.live.shape != (n,) or state.in_graph.shape != (n,):
            raise ItemIndexError("liveness arrays do not match the ids")
        if np.any(state.live & ~state.in_graph) or len(set(state.ids)) != n:
            raise ItemIndexError("a live label is not in the graph, or an id repeats")
        if graph.dim != vectors.shape[1] or graph.get_current_count() != int(state.in_graph.sum()):
            raise ItemIndexError("the graph does not hold the labels the arrays say")
        index = cls.__new__(cls)
        index._setup(state, graph)
        index._ef_search = ef_search
        graph.set_ef(ef_search)
        return index

    def export_state(self) -> IndexState:
        """The contents other than the graph (``save_graph`` writes it), with ``in_graph``
        made exact. Views, not copies (a copy of 1M vectors is 256 MiB of RSS at d = 64): valid
        until the index next changes, so write them out before that (the worker writes
        snapshots between two batches, on the loop's thread)."""
        self._resolve_in_graph()
        n = len(self._ids)
        return IndexState(
            self._ids, self._vectors[:n], self._live[:n], self._in_graph[:n], self.centroid
        )

    def replace_with(self, other: ItemIndex) -> None:
        """Serve ``other``'s contents from now on, in place (holders of this index see them)."""
        n = other.n_labels
        state = IndexState(
            other._ids, other._vectors[:n], other._live[:n], other._in_graph[:n], other.centroid
        )
        self._setup(state, other._graph)
        self._ef_search = other._ef_search

    def save_graph(self, path: str) -> None:
        """Write the hnswlib graph to ``path`` (hnswlib's own format)."""
        self._graph.save_index(path)

    @property
    def ef_search(self) -> int:
        """hnswlib's query-time beam (raised per query to the neighbours it fetches)."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, ef: int) -> None:
        if ef < 1:
            raise ItemIndexError(f"ef_search must be >= 1, got {ef}")
        self._ef_search = ef
        self._graph.set_ef(ef)

    @property
    def size(self) -> int:
        """Searchable (live) items (a counter: O(1))."""
        return self._n_live

    @property
    def n_labels(self) -> int:
        """Labels handed out so far (live or not); grows by one per new item."""
        return len(self._ids)

    def stats(self) -> IndexStats:
        """Live and deleted-but-not-compacted (still in the graph) item counts."""
        return IndexStats(live=self._n_live, deleted=self.graph_size - self._n_live)

    @property
    def graph_size(self) -> int:
        """Places in the graph (live and deleted items): grows only when no deleted place is
        free for a new item. Read without waiting for a background write (which only rewrites
        vectors of items in the graph): metrics and compaction checks never wait."""
        return int(self._hnsw.get_current_count())

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._label

    def is_live(self, item_id: str) -> bool:
        """True when the item is known and available."""
        label = self._label.get(item_id)
        return label is not None and bool(self._live[label])

    def vectors_of(self, item_ids: Iterable[str]) -> np.ndarray:
        """Vectors of the known items among ``item_ids`` (unknown ids skipped), [n, dim]."""
        labels = [self._label[i] for i in item_ids if i in self._label]
        return self._vectors[labels].reshape(len(labels), self.dim)

    def labels_of(self, item_ids: Iterable[str]) -> np.ndarray:
        """The label of each id (-1 for an unknown id), int64, in the order given."""
        get = self._label.get
        return np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64)

    def vectors_at(self, labels: np.ndarray) -> np.ndarray:
        """Vectors of known labels (``labels >= 0``), [len(labels), dim]."""
        return self._vectors[labels].reshape(len(labels), self.dim)

    def ids_of(self, labels: Iterable[int]) -> list[str]:
        """The ids of known labels."""
        ids = self._ids
        return [ids[lab] for lab in labels]

    def id_order(self, labels: np.ndarray) -> np.ndarray:
        """Per label, an int64 that orders labels as their ids (ascending): for tie-breaks."""
        if self._id_rank is None:
            self._id_rank = _IdRank(self._ids, self._label)
        return self._id_rank.ranks[labels]

    def live_mask(self, labels: np.ndarray) -> np.ndarray:
        """Per label, whether it is a known, live item (-1, an unknown id, is not)."""
        labels = np.asarray(labels, dtype=np.int64)
        return (labels >= 0) & self._live[np.maximum(labels, 0)]

    def upsert(self, item_id: str, vector: Sequence[float] | None, available: bool) -> None:
        """Add or update an item; it is searchable (if available) when this returns."""
        if vector is not None and len(vector) != self.dim:
            raise ItemIndexError(f"vector of {item_id!r} has {len(vector)} dims, not {self.dim}")
        label = self._label.get(item_id)
        if label is None:
            self._append(item_id, self.centroid if vector is None else vector, available)
            return
        if vector is not None:
            self._vectors[label] = np.asarray(vector, dtype=np.float32)
            self._touch(label)
            if self._live[label] and available:
                # add_items on a live label replaces its vector in place; a deleted label's
                # graph vector is refreshed when it comes back (``_set_live``)
                self._graph.add_items(self._vectors[label : label + 1], [label])
        self._set_live(label, available)

    def update_vectors(
        self,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        threads: int = 1,
        background: bool = False,
    ) -> None:
        """Replace the vectors of known items (liveness unchanged) in one graph call.

        The same contents as one ``upsert`` per item, but hnswlib rewrites the graph's
        vectors in one ``add_items`` (on ``threads`` threads). With ``background`` the graph
        write runs on a thread of its own and this returns at once; the next use of the graph
        waits for it (module docstring).

        Raises:
            ItemIndexError: an id is unknown, or the vectors have the wrong shape.
        """
        if not len(item_ids):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(item_ids), self.dim):
            raise ItemIndexError(f"vectors {vectors.shape} do not match {len(item_ids)} ids")
        labels = self.labels_of(item_ids)
        if np.any(labels < 0):
            raise ItemIndexError("update_vectors takes known items only")
        self._vectors[labels] = vectors
        for label in labels.tolist():
            self._touch(label)
        rows = labels[self._live[labels]]
        if not len(rows):
            return
        # as in ``upsert``: add_items on live labels replaces their vectors in place; a
        # deleted label's graph vector is refreshed when it comes back (``_set_live``)
        graph = self._graph  # waits for the write under way
        if background:
            self._writer = _GraphWrite(graph, self._vectors[rows], rows, threads)
        else:
            graph.add_items(self._vectors[rows], rows, num_threads=threads)

    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more items, so that adding them does not grow the graph
        (growing copies it: call this where a pause does not matter, e.g. off the loop)."""
        want = len(self._ids) + extra
        if want > self._graph.get_max_elements():
            self._graph.resize_index(want)
        if want > len(self._vectors):
            pad = want - len(self._vectors)
            self._vectors = np.vstack([self._vectors, np.zeros((pad, self.dim), np.float32)])
            self._live = np.concatenate([self._live, np.zeros(pad, dtype=bool)])
            self._in_graph = np.concatenate([self._in_graph, np.zeros(pad, dtype=bool)])

    def live_count(self, exclude: AbstractSet[str] = frozenset()) -> int:
        """Live items not in ``exclude`` (a set: each excluded id is subtracted once)."""
        return self.size - sum(1 for i in exclude if self.is_live(i))

    def sample_live(self, rng: np.random.Generator, n: int, exclude: set[str]) -> list[str]:
        """``n`` distinct live items not in ``exclude``, uniformly without replacement.

        Rejection sampling over the labels costs O(n) draws while most items are eligible;
        when too many draws are rejected it falls back to listing the eligible items.

        Raises:
            ValueError: fewer than ``n`` items are eligible.
        """
        total = len(self._ids)
        chosen: dict[int, None] = {}  # insertion-ordered: the draw order is the result order
        budget = 8 * n + 64
        while total and len(chosen) < n and budget > 0:
            label = int(rng.integers(total))
            budget -= 1
            if self._live[label] and label not in chosen and self._ids[label] not in exclude:
                chosen[label] = None
        if len(chosen) < n:
            eligible = [
                lab
                for lab in np.flatnonzero(self._live[:total]).tolist()
                if lab not in chosen and self._ids[lab] not in exclude
            ]
            if len(eligible) < n - len(chosen):
                raise ValueError(f"only {len(chosen) + len(eligible)} eligible items, need {n}")
            for i in rng.permutation(len(eligible))[: n - len(chosen)].tolist():
                chosen[eligible[i]] = None
        return [self._ids[lab] for lab in chosen]

    def remove(self, item_id: str) -> None:
        """Make an item unsearchable (its vector stays for histories that contain it)."""
        label = self._label.get(item_id)
        if label is not None:
            self._set_live(label, False)

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[set[str]] | None = None
    ) -> list[list[tuple[str, float]]]:
        """Top-k live items by inner product for each query, skipping excluded ids.

        Returns:
            per query, up to k (item_id, score) pairs, best first.
        """
        ids = self._ids
        return [
            [(ids[lab], score) for lab, score in zip(labels.tolist(), scores.tolist(), strict=True)]
            for labels, scores in self.search_labels(queries, k, exclude)
        ]

    def search_labels(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[set[str]] | None = None,
        exclude_labels: Sequence[np.ndarray] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``search`` as arrays: per query, (labels int64, scores float64), best first.

        Each query fetches ``k + len(its exclude)`` neighbours (doubling while the exclusions
        leave fewer than ``k``) with the beam ``max(ef_search, fetch)``. Queries are searched
        in one ``knn_query`` per beam: hnswlib's result for a smaller ``k`` under the same beam
        is the head of the larger one (the same candidates, cut), except where the distances
        tie across the cut; such queries, and every query of a call that hnswlib cannot fill,
        are searched alone, as before.

        Args:
            queries: [n, dim] (or one [dim] query).
            k: results wanted per query.
            exclude: per query, ids never returned (their count sets the fetch size).
            exclude_labels: the same exclusions as labels (known ids only), when the caller
                has them already.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ItemIndexError(f"queries have shape {queries.shape}, expected (n, {self.dim})")
        excl = list(exclude) if exclude is not None else [set() for _ in range(len(queries))]
        if len(excl) != len(queries):
            raise ItemIndexError("exclude must have one set per query")
        if exclude_labels is None:
            skips = [self.known_labels(skip) for skip in excl]
        else:
            skips = [np.asarray(s, dtype=np.int64) for s in exclude_labels]
            skips = [s[s >= 0] for s in skips]
            if len(skips) != len(queries):
                raise ItemIndexError("exclude_labels must have one array per query")
        live = self.size
        fetches = [min(live, k + len(skip)) for skip in excl]
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float64))
        results: list[tuple[np.ndarray, np.ndarray]] = [empty] * len(queries)
        groups: dict[int, list[int]] = {}
        for row, fetch in enumerate(fetches):
            if fetch > 0:
                groups.setdefault(max(self._ef_search, fetch), []).append(row)
        mask = np.zeros(len(self._ids), dtype=bool)  # the excluded labels of one query
        for ef, rows in groups.items():
            widest = max(fetches[r] for r in rows)
            found = self._knn_batch(queries[rows], widest, ef)
            for j, row in enumerate(rows):
                fetch, skip = fetches[row], skips[row]
                if found is None or (
                    fetch < widest and found[1][j, fetch - 1] == found[1][j, fetch]
                ):
                    results[row] = self._search_one(queries[row], k, skip, fetch, live, mask)
                    continue
                labels, dists = found[0][j, :fetch], found[1][j, :fetch]
                mask[skip] = True
                keep = ~mask[labels]
                mask[skip] = False
                if int(keep.sum()) >= k or fetch >= live:
                    results[row] = (labels[keep][:k], _ip_scores(dists[keep][:k]))
                else:
                    results[row] = self._search_one(
                        queries[row], k, skip, min(live, fetch * 2), live, mask
                    )
        return results

    def known_labels(self, item_ids: Iterable[str]) -> np.ndarray:
        """The labels of the known ids among ``item_ids`` (unknown ids skipped)."""
        labels = self.labels_of(item_ids)
        return labels[labels >= 0]

    def _search_one(
        self,
        query: np.ndarray,
        k: int,
        skip: np.ndarray,
        fetch: int,
        live: int,
        mask: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One query alone, from ``fetch`` neighbours on, doubling while too few are left."""
        while fetch > 0:
            labels, scores = self._knn(query, fetch)
            mask[skip] = True
            keep = ~mask[labels]
            mask[skip] = False
            if int(keep.sum()) >= k or fetch >= live:
                return labels[keep][:k], scores[keep][:k]
            fetch = min(live, fetch * 2)
        return np.zeros(0, np.int64), np.zeros(0, np.float64)

    def _knn_batch(
        self, queries: np.ndarray, fetch: int, ef: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(labels, distances) [n, fetch] under beam ``ef``; None when hnswlib cannot fill."""
        self._graph.set_ef(ef)
        try:
            labels, dists = self._graph.knn_query(queries, k=fetch)
        except RuntimeError:
            return None
        return labels.astype(np.int64), dists

    def _knn(self, query: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        self._graph.set_ef(max(self._ef_search, fetch))
        try:
            labels, dists = self._graph.knn_query(query[None, :], k=fetch)
        except RuntimeError:
            # hnswlib cannot always fill k slots when many nodes are deleted: fall back to exact.
            return self._exact(query, fetch)
        return labels[0].astype(np.int64), _ip_scores(dists[0])

    def _exact(self, query: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self._ids)
        scores = self._vectors[:n] @ query
        scores[~self._live[:n]] = -np.inf
        top = np.argsort(-scores, kind="stable")[:fetch]
        top = top[np.isfinite(scores[top])]
        return top.astype(np.int64), scores[top].astype(np.float64)

    def _append(self, item_id: str, vector: Sequence[float] | np.ndarray, available: bool) -> None:
        label = len(self._ids)
        self._ids.append(item_id)
        self._label[item_id] = label
        if self._id_rank is not None:
            self._id_rank.add(item_id, label)
        if label >= len(self._vectors):
            grow = _headroom(len(self._vectors))
            self._vectors = np.vstack([self._vectors, np.zeros((grow, self.dim), np.float32)])
            self._live = np.concatenate([self._live, np.zeros(grow, dtype=bool)])
            self._in_graph = np.concatenate([self._in_graph, np.zeros(grow, dtype=bool)])
        self._vectors[label] = np.asarray(vector, dtype=np.float32)
        self._touch(label)
        self._graph_add(label)
        if available:
            self._live[label] = True
            self._n_live += 1
        else:
            self._graph.mark_deleted(label)

    def _graph_add(self, label: int) -> None:
        """Add a label that is not in the graph, in a deleted item's place when there is one
        (else at the end, growing the graph when it is full)."""
        vacant = self._graph.get_current_count() > self._n_live  # deleted places
        insert(self._graph, self._vectors[label : label + 1], label, vacant)
        self._in_graph[label] = True

    def _set_live(self, label: int, live: bool) -> None:
        if live and not self._live[label]:
            self._touch(label)
            if self._in_graph[label] and self._unmark(label):
                # back in its own place; its vector may have changed while it was deleted
                self._graph.add_items(self._vectors[label : label + 1], [label])
            else:  # compacted away, or its place taken, while deleted: back into the graph
                self._graph_add(label)
            self._n_live += 1
        elif not live and self._live[label]:
            self._touch(label)
            self._graph.mark_deleted(label)
            self._n_live -= 1
        self._live[label] = live

    def _unmark(self, label: int) -> bool:
        """Un-delete a deleted label in the graph; False (and ``in_graph`` corrected) when its
        place was taken by another item (hnswlib no longer knows the label)."""
        try:
            self._graph.unmark_deleted(label)
        except RuntimeError:
            self._in_graph[label] = False
            return False
        return True

    def _resolve_in_graph(self) -> None:
        """Make ``in_graph`` exact: probe each deleted label that may still be in the graph."""
        n = len(self._ids)
        for label in np.flatnonzero(self._in_graph[:n] & ~self._live[:n]).tolist():
            if self._unmark(label):
                self._graph.mark_deleted(label)
        if int(np.count_nonzero(self._in_graph[:n])) != self._graph.get_current_count():
            raise ItemIndexError("the graph does not hold the labels the index says")

    def _touch(self, label: int) -> None:
        if self._dirty is not None:
            self._dirty.add(label)

    # -- compaction (``streamrec.ranking.compaction``) ----------------------------------------
    def deleted_ratio(self) -> float:
        """Share of the graph's items that are deleted (0 for an empty graph)."""
        places = self.graph_size
        return (places - self._n_live) / places if places else 0.0

    def begin_compaction(self) -> CompactionInput:
        """Copy what a graph of the live items is built from; changes are tracked from now."""
        labels = np.flatnonzero(self._live[: len(self._ids)]).astype(np.int64)
        self._dirty = set()
        m = self._graph.M
        return CompactionInput(labels, self._vectors[labels], m, self._graph.ef_construction)

    def finish_compaction(self, labels: np.ndarray, graph: hnswlib.Index) -> None:
        """Swap in ``graph`` (built from ``begin_compaction``'s input), replaying the changes
        made since; the caller is between two batches, so no search sees the swap half done.

        The replay deletes first and adds after, so the items added during the build take
        the places of those deleted during it: under steady churn the new graph starts with
        (about) no deleted items, and the next compaction is not due at once.
        """
        dirty, self._dirty = sorted(self._dirty or ()), None
        in_graph = np.zeros(len(self._in_graph), dtype=bool)
        in_graph[labels] = True
        deleted = 0
        for label in dirty:  # labels built into the graph: changed or deleted since the copy
            if in_graph[label]:
                if self._live[label]:
                    graph.add_items(self._vectors[label : label + 1], [label])
                else:
                    graph.mark_deleted(label)
                    deleted += 1
        for label in dirty:  # new or come back since the copy: into deleted places first
            if self._live[label] and not in_graph[label]:
                insert(graph, self._vectors[label : label + 1], label, deleted > 0)
                deleted = max(0, deleted - 1)
                in_graph[label] = True
        graph.set_ef(self._ef_search)
        self._graph = graph
        self._in_graph = in_graph

    def abandon_compaction(self) -> None:
        """Stop tracking changes (a compaction that failed)."""
        self._dirty = None


class _GraphWrite:
    """One ``add_items`` on a thread of its own (hnswlib releases the GIL while it writes)."""

    def __init__(
        self, graph: hnswlib.Index, vectors: np.ndarray, labels: np.ndarray, threads: int
    ) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(graph, vectors, labels, threads), name="index-write"
        )
        self._thread.start()

    def _run(
        self, graph: hnswlib.Index, vectors: np.ndarray, labels: np.ndarray, threads: int
    ) -> None:
        try:
            graph.add_items(vectors, labels, num_threads=threads)
        except BaseException as exc:  # re-raised on the caller's thread (``join``)
            self._error = exc

    def join(self) -> None:
        self._thread.join()

    def raise_error(self) -> None:
        if self._error is not None:
            raise ItemIndexError(f"graph write failed: {self._error}") from self._error


def new_graph(dim: int, max_elements: int, m: int, ef_construction: int) -> hnswlib.Index:
    """An empty inner-product graph that lets new items take deleted items' places."""
    graph = hnswlib.Index(space="ip", dim=dim)
    graph.init_index(
        max_elements=max_elements, M=m, ef_construction=ef_construction, allow_replace_deleted=True
    )
    return graph


def insert(graph: hnswlib.Index, vector: np.ndarray, label: int, vacant: bool) -> None:
    """Add ``label`` (not in ``graph``) in a deleted item's place when ``vacant`` (the graph has
    one), else at the end, growing the graph first when it is full."""
    if not vacant and graph.get_current_count() >= graph.get_max_elements():
        graph.resize_index(graph.get_max_elements() + _headroom(graph.get_max_elements()))
    graph.add_items(vector, [label], replace_deleted=True)


def _headroom(n: int) -> int:
    """Slots to add to a full array or graph of ``n``: an eighth (at least 16). Geometric, so
    appends stay amortised O(1) (a copy of everything every n/8 new items), without doubling:
    at 1,000,000 items x d = 64, doubling on the first new item cost ~330 MiB of RSS (the
    vector array and hnswlib's per-element locks), measured by ``make soak``."""
    return max(16, n // 8)


class _IdRank:
    """Integers in the order of the item ids, per label, kept up to date as items arrive.

    Ranks are spread ``_GAP`` apart; a new id takes the middle of the gap between its sorted
    neighbours, and every rank is renumbered when a gap is used up (rare).
    """

    _GAP = 1 << 32

    def __init__(self, ids: list[str], label: dict[str, int]) -> None:
        self._ids = ids  # the index's own list and map, shared (read only here)
        self._label = label
        self.ranks = np.zeros(0, dtype=np.int64)
        self._sorted: list[str] = []
        self._renumber()

    def _renumber(self) -> None:
        self._sorted = sorted(self._ids)
        ranks = np.zeros(max(16, 2 * len(self._ids)), dtype=np.int64)
        labels = np.fromiter(map(self._label.__getitem__, self._sorted), np.int64, len(self._ids))
        ranks[labels] = np.arange(1, len(labels) + 1, dtype=np.int64) * self._GAP
        self.ranks = ranks

    def add(self, item_id: str, label: int) -> None:
        """Rank a new label (its id already appended to the index's list and map)."""
        if label >= len(self.ranks):
            self.ranks = np.concatenate([self.ranks, np.zeros(len(self.ranks), np.int64)])
        pos = bisect_left(self._sorted, item_id)
        low = int(self.ranks[self._label[self._sorted[pos - 1]]]) if pos > 0 else 0
        if pos < len(self._sorted):
            high = int(self.ranks[self._label[self._sorted[pos]]])
        else:
            high = low + 2 * self._GAP
        if high - low < 2:
            self._renumber()
            return
        self._sorted.insert(pos, item_id)
        self.ranks[label] = (low + high) // 2


# hnswlib's "ip" distance is 1 - inner product (float32); a score is ``1.0 - distance`` computed
# as numpy computes it for one float32 scalar (float32 under NumPy 2, float64 under NumPy 1).
_IP_DTYPE = np.asarray(1.0 - np.float32(0.5)).dtype


def _ip_scores(dists: np.ndarray) -> np.ndarray:
    return (1.0 - np.asarray(dists).astype(_IP_DTYPE)).astype(np.float64)
