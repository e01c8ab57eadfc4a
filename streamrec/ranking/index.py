"""The item index: hnswlib (inner product) over item vectors, with an id map.

Items from the model keep their trained vectors. Items added by the catalog get the vector
carried on the catalog record, or else the centroid of the trained vectors (a neutral cold-start
vector, searchable at once). Deleted or unavailable items are marked deleted in the graph and
never returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import hnswlib
import numpy as np

from streamrec.errors import ItemIndexError


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
        self.dim = int(vectors.shape[1])
        self._ids: list[str] = list(item_ids)
        self._label = {item_id: i for i, item_id in enumerate(self._ids)}
        self._vectors = vectors.copy()
        self._live = np.ones(len(self._ids), dtype=bool)
        self.centroid = vectors.mean(axis=0) if len(vectors) else np.zeros(self.dim, np.float32)
        self._ef_search = ef_search
        self._graph = hnswlib.Index(space="ip", dim=self.dim)
        self._graph.init_index(
            max_elements=max(16, len(self._ids)), M=m, ef_construction=ef_construction
        )
        if len(self._ids):
            self._graph.add_items(self._vectors, np.arange(len(self._ids)))
        self._graph.set_ef(ef_search)

    @property
    def size(self) -> int:
        """Searchable (live) items."""
        return int(self._live[: len(self._ids)].sum())

    def stats(self) -> IndexStats:
        """Live and deleted-but-not-compacted item counts."""
        n = len(self._ids)
        live = int(self._live[:n].sum())
        return IndexStats(live=live, deleted=n - live)

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

    def upsert(self, item_id: str, vector: Sequence[float] | None, available: bool) -> None:
        """Add or update an item; it is searchable (if available) when this returns."""
        if vector is not None and len(vector) != self.dim:
            raise ItemIndexError(f"vector of {item_id!r} has {len(vector)} dims, not {self.dim}")
        label = self._label.get(item_id)
        if label is None:
            label = self._append(item_id, self.centroid if vector is None else vector)
        elif vector is not None:
            self._vectors[label] = np.asarray(vector, dtype=np.float32)
            # add_items on an existing label replaces its vector and un-deletes it in the graph
            self._graph.add_items(self._vectors[label : label + 1], [label])
            if not self._live[label]:
                self._graph.mark_deleted(label)
        self._set_live(label, available)

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
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ItemIndexError(f"queries have shape {queries.shape}, expected (n, {self.dim})")
        excl = list(exclude) if exclude is not None else [set() for _ in range(len(queries))]
        if len(excl) != len(queries):
            raise ItemIndexError("exclude must have one set per query")
        results: list[list[tuple[str, float]]] = []
        for row, skip in zip(queries, excl, strict=True):
            results.append(self._search_one(row, k, skip))
        return results

    def _search_one(self, query: np.ndarray, k: int, skip: set[str]) -> list[tuple[str, float]]:
        live = self.size
        fetch = min(live, k + len(skip))
        while fetch > 0:
            hits = [(i, s) for i, s in self._knn(query, fetch) if i not in skip]
            if len(hits) >= k or fetch >= live:
                return hits[:k]
            fetch = min(live, fetch * 2)
        return []

    def _knn(self, query: np.ndarray, fetch: int) -> list[tuple[str, float]]:
        self._graph.set_ef(max(self._ef_search, fetch))
        try:
            labels, dists = self._graph.knn_query(query[None, :], k=fetch)
        except RuntimeError:
            # hnswlib cannot always fill k slots when many nodes are deleted: fall back to exact.
            return self._exact(query, fetch)
        return [
            (self._ids[lab], float(1.0 - d)) for lab, d in zip(labels[0], dists[0], strict=True)
        ]

    def _exact(self, query: np.ndarray, fetch: int) -> list[tuple[str, float]]:
        n = len(self._ids)
        scores = self._vectors[:n] @ query
        scores[~self._live[:n]] = -np.inf
        top = np.argsort(-scores, kind="stable")[:fetch]
        return [(self._ids[i], float(scores[i])) for i in top if np.isfinite(scores[i])]

    def _append(self, item_id: str, vector: Sequence[float] | np.ndarray) -> int:
        label = len(self._ids)
        self._ids.append(item_id)
        self._label[item_id] = label
        if label >= len(self._vectors):
            grow = max(16, len(self._vectors))
            self._vectors = np.vstack([self._vectors, np.zeros((grow, self.dim), np.float32)])
            self._live = np.concatenate([self._live, np.zeros(grow, dtype=bool)])
        self._vectors[label] = np.asarray(vector, dtype=np.float32)
        if label >= self._graph.get_max_elements():
            self._graph.resize_index(max(2 * label, 16))
        self._graph.add_items(self._vectors[label : label + 1], [label])
        self._graph.mark_deleted(label)
        return label

    def _set_live(self, label: int, live: bool) -> None:
        if live and not self._live[label]:
            self._graph.unmark_deleted(label)
        elif not live and self._live[label]:
            self._graph.mark_deleted(label)
        self._live[label] = live
