"""Vectors for items the model never saw, from the first evidence in the stream.

A new item (not among the trained items) that the catalog knows gets a vector as soon as it
co-occurs with a trained item in some user's recent window (``covisit.CoVisitation``)::

    cooc(x) = direction of  sum_j c(x, j) * v_j   over trained neighbours j,
              scaled to the weighted mean norm of those v_j, times n(x) / (n(x) + prior)

(the mean of the vectors of the items it is consumed with: item2vec-style, no training). When the
catalog carried content features (a ``vector`` on the catalog record), they are blended in with
the weight of ``content_weight`` co-occurrences::

    v(x) = (content_weight * content(x) + n(x) * cooc(x)) / (content_weight + n(x))

where ``n(x)`` is the total co-occurrence weight with trained items. The ``prior`` shrinks
the vectors of items with little evidence: in inner-product search a full-norm average of
popular neighbours outranks the items a user actually wants. The first vector is written to
the index in the same call that saw the evidence, so the item is searchable at once (well
within a second of the event).

**Only items the catalog knows get a vector.** An item id seen only in events (the default
``unknown_item_policy=accept`` keeps such events in the users' histories) is not in the index
and is not written into it: it is never searched, sampled or shown, whatever its trending or
co-visitation evidence (which is still counted). When the catalog upserts it
(``on_catalog_upsert``), the index holds it at once (the catalog's vector, or the centroid) and
its evidence vector, if it has evidence by then, is written in the same call. Junk ids in events
thus never reach other users' lists, and they keep no per-item state here.

Rewriting an item's vector costs an HNSW update (hundreds of microseconds at 100,000 items), and
an event touches every new item in the user's co-visitation window, so vectors are rewritten on
a geometric schedule: when the item's evidence events since the last write reach
``refresh_ratio`` times those counted at that write (and at least one). Early evidence, which
moves a vector most, is written at once: with the default 0.5, at touches 1, 2, 3, 5, 8, 12, ...
(each write after half as much evidence again). A batch writes each due vector once, after its
last event, in one graph call (``Ranker.observe_batch``); a restore counts the touches of the
events it replays, so the schedule goes on after a restart (before, every touch after a restart
was due again). ``write_vectors`` (a restore, or an explicit refresh) always writes.

The pipeline writes a batch's due vectors after it has ranked the batch (``defer`` then
``write_deferred``), with the graph write in the background (``ItemIndex.update_vectors``):
the rewrite overlaps the batch's commit and the next batch's reads on the other core, and the
batch's lists see the vectors of the batches before it (the next batch sees these).

The default was 0.1 (the first ten touches each written). At 100,000 catalog items, 0.5 writes
4x fewer vectors (116 instead of 470 per batch of 200 events in the throughput benchmark's
traffic) with the same ML-100k replay NDCG@10 (fused 0.1030 vs 0.1029; BENCHMARKS.md).

**Content vectors are not kept twice.** While the index still holds the catalog's vector of a
new item (no evidence written over it yet), that vector is read from the index; a copy is kept
here only once evidence is about to overwrite it. At 1,000,000 catalog items with vectors
(d = 64) a copy each cost about 400 MiB (a NumPy array and a dict entry per item,
``benchmarks/memory.py``); now the items with evidence alone hold one.

For metrics, ``updates`` counts the vectors written and ``searchable`` the new items whose
evidence or content vector is in the index and live now (a counted flag per index label, so
reading it is O(1); the ranker calls ``update_searchable`` after every catalog change of an
item). The per-item bookkeeping is a byte per index label, not id sets (three sets cost ~96 MiB
at 1,000,000 items).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping

import numpy as np

from streamrec.ranking.covisit import CoVisitation
from streamrec.ranking.index import ItemIndex


class NewItemVectors:
    """Keeps vectors of new items up to date in the index.

    Args:
        index: the live item index (vectors are upserted into it).
        trained: ids of the items the model was trained on (they keep their vectors).
        covisit: the co-visitation counts the evidence comes from.
        content_weight: weight of catalog content vectors, in co-occurrence units.
        prior: co-occurrence weight at which the evidence vector has half its full norm
            (0: full norm from the first co-occurrence).
        refresh_ratio: rewrite a vector once its evidence events since the last write reach
            this share of those counted then (0: after every event, as before).
        threads: threads of hnswlib's graph rewrite of a batch's vectors.
    """

    def __init__(
        self,
        index: ItemIndex,
        trained: Collection[str],
        covisit: CoVisitation,
        content_weight: float = 2.0,
        prior: float = 0.0,
        refresh_ratio: float = 0.5,
        threads: int = 1,
    ) -> None:
        if prior < 0:
            raise ValueError(f"prior must be >= 0, got {prior}")
        if refresh_ratio < 0:
            raise ValueError(f"refresh_ratio must be >= 0, got {refresh_ratio}")
        self.refresh_ratio = refresh_ratio
        self.threads = threads
        self._touches: dict[str, int] = {}  # evidence events per new item
        self._written_at: dict[str, int] = {}  # its touches when its vector was last written
        self._deferred: set[str] = set()  # due, written by ``write_deferred``
        self.index = index
        self.trained = frozenset(trained)
        self.covisit = covisit
        self.content_weight = content_weight
        self.prior = prior
        # content vectors of new items: those the index no longer holds (module docstring),
        # and the ids whose vector in the index is still their content vector
        self._content: dict[str, np.ndarray] = {}
        self.updates = 0  # vectors written (for metrics and tests)
        # per index label: VECTORED (a new item given an evidence or content vector),
        # SEARCHABLE (... whose vector is live in the index now), IN_INDEX (its content vector
        # is the index's): a byte per item, not three id sets (~96 MiB at 1M items)
        self._flags = _LabelFlags()

    @property
    def searchable(self) -> int:
        """New items with an evidence or content vector that are searchable now (O(1))."""
        return self._flags.count(SEARCHABLE)

    def update_searchable(self, item_id: str) -> None:
        """Re-check whether a new item counts as searchable (after the index changed for it)."""
        label = self._label(item_id)
        if label >= 0:
            on = self._flags.has(label, VECTORED) and self.index.is_live(item_id)
            self._flags.set(label, SEARCHABLE, on)

    def saved_state(self) -> tuple[Mapping[str, np.ndarray], list[str]]:
        """What a snapshot keeps besides the index: the catalog's content vectors of new items
        and the new items that have a vector in the index (copies of the id sets; the vectors
        still in the index are read from it when the mapping is read, so write the snapshot
        before the index changes, as the worker does between two catalog polls)."""
        in_index = self._flags.labels(IN_INDEX)
        content = _Content(dict(self._content), in_index, self.index)
        return content, sorted(self.index.ids_of(self._flags.labels(VECTORED).tolist()))

    def load_state(self, content: Mapping[str, np.ndarray], vectored: Iterable[str]) -> None:
        """Take back ``saved_state`` (with the index it was saved with)."""
        self._content, self._flags = {}, _LabelFlags()
        ids = list(content)
        for start in range(0, len(ids), _CHUNK):  # compared in chunks: a bounded transient
            chunk = ids[start : start + _CHUNK]
            vectors = np.stack([np.asarray(content[i], np.float32) for i in chunk])
            if vectors.shape[1:] != (self.index.dim,):  # a foreign dimension: kept, never used
                self._content.update(zip(chunk, vectors, strict=True))
                continue
            labels = self.index.labels_of(chunk)
            known = labels >= 0
            same = known.copy()
            same[known] = np.all(self.index.vectors_at(labels[known]) == vectors[known], axis=1)
            self._flags.set_many(labels[same], IN_INDEX)
            for item_id, vector, in_index in zip(chunk, vectors, same.tolist(), strict=True):
                if not in_index:
                    self._content[item_id] = vector.copy()
        labels = self.index.labels_of(vectored)
        labels = labels[labels >= 0]  # a new item has a vector only in the index
        self._flags.set_many(labels, VECTORED)
        self._flags.set_many(labels[self.index.live_mask(labels)], SEARCHABLE)

    def content_of(self, item_id: str) -> np.ndarray | None:
        """The content vector the catalog carried for a new item (None: none)."""
        label = self._label(item_id)
        if self._flags.has(label, IN_INDEX):
            return self.index.vectors_at(np.asarray([label]))[0]
        return self._content.get(item_id)

    def _label(self, item_id: str) -> int:
        return int(self.index.labels_of([item_id])[0])

    def _keep_content(self, item_id: str, vector: np.ndarray) -> None:
        """``vector`` is about to be written over the index's vector of ``item_id``: copy the
        content vector the index holds first (when the two differ)."""
        label = self._label(item_id)
        if not self._flags.has(label, IN_INDEX):
            return
        content = self.index.vectors_at(np.asarray([label]))[0]
        if np.array_equal(content, vector):
            return  # still the content vector (no evidence yet)
        self._content[item_id] = content
        self._flags.set(label, IN_INDEX, False)

    def is_new(self, item_id: str) -> bool:
        """True when the model was not trained on this item."""
        return item_id not in self.trained

    def set_content(self, item_id: str, vector: Iterable[float] | None) -> None:
        """Remember the content features the catalog carried for a new item."""
        if vector is not None and self.is_new(item_id):
            content = np.asarray(list(vector), dtype=np.float32)
            label = self._label(item_id)
            held = label >= 0 and np.array_equal(
                self.index.vectors_at(np.asarray([label]))[0], content
            )
            if held:
                self._content.pop(item_id, None)  # the index holds it (module docstring)
            else:
                self._content[item_id] = content
            if label >= 0:
                self._flags.set(label, IN_INDEX, held)
                self._flags.set(label, VECTORED, True)  # the catalog wrote it into the index
        self.update_searchable(item_id)

    def on_catalog_upsert(self, item_id: str, vector: Iterable[float] | None) -> list[str]:
        """The catalog upserted ``item_id`` (the index applied it): remember its content
        vector and, for a new item with evidence, write its evidence vector now.

        Returns:
            ``[item_id]`` when its vector was written, else ``[]``.
        """
        self.set_content(item_id, vector)
        return self.write_vectors([item_id])

    def touch(self, item_id: str, paired: Iterable[str]) -> list[str]:
        """Count one event of ``item_id`` paired with ``paired`` as evidence of the new items
        among them, writing nothing (module docstring: the first at once, later on a geometric
        schedule).

        Returns:
            the new items whose vector is due: the caller writes them (``write_vectors``),
            after this event or, for a batch, each once after its last event.
        """
        due = []
        index, touches_of, written_at = self.index, self._touches, self._written_at
        for item in {item_id, *paired}:
            if item in self.trained or item not in index:  # trained, or not in the catalog yet
                continue
            touches = touches_of.get(item, 0) + 1
            touches_of[item] = touches
            last = written_at.get(item, 0)
            if touches - last >= max(1.0, self.refresh_ratio * last):
                due.append(item)
        return due

    def defer(self, items: Iterable[str]) -> None:
        """Remember due items, to be written by the next ``write_deferred``."""
        self._deferred.update(items)

    def write_deferred(self, background: bool = False) -> list[str]:
        """``write_vectors`` of the items deferred so far (module docstring)."""
        items, self._deferred = self._deferred, set()
        return self.write_vectors(items, background) if items else []

    def write_vectors(self, items: Iterable[str], background: bool = False) -> list[str]:
        """Write the current evidence vector of every new item among ``items``.

        One call after many events gives the same vectors as one call per event: an
        item's vector only depends on its own co-visitation row, which changes only in events
        that touch it.

        Args:
            items: the items.
            background: leave the graph write to the index's writer thread
                (``ItemIndex.update_vectors``).

        Returns:
            the new items whose vector was written.
        """
        written, vectors = [], []
        index = self.index
        for new in sorted({i for i in items if self.is_new(i) and i in index}):
            vector = self.vector_for(new)
            if vector is not None:
                self._keep_content(new, vector)
                written.append(new)
                vectors.append(vector)
        if not written:
            return written
        # one graph call for all (an item the catalog removed or made unavailable stays hidden)
        index.update_vectors(written, np.stack(vectors), self.threads, background)
        self.updates += len(written)
        for new in written:
            self._written_at[new] = self._touches.get(new, 0)
            self._flags.set(self._label(new), VECTORED, True)
            self.update_searchable(new)
        return written

    def vector_for(self, item_id: str) -> np.ndarray | None:
        """The current evidence vector of a new item (None without evidence)."""
        weights, rows = [], []
        for other, weight in self.covisit.neighbors(item_id).items():
            if other in self.trained:
                weights.append(weight)
                rows.append(other)
        content = self.content_of(item_id)
        if not rows:
            return content
        vecs = self.index.vectors_of(rows)
        w = np.asarray(weights, dtype=np.float32)
        mean = (w[:, None] * vecs).sum(axis=0)
        norm = float(np.linalg.norm(mean))
        if norm == 0.0:
            return content
        n = float(w.sum())
        target_norm = float((w * np.linalg.norm(vecs, axis=1)).sum() / n) * n / (n + self.prior)
        cooc = mean / norm * target_norm
        if content is None or content.shape != cooc.shape:
            return cooc.astype(np.float32)
        blended = (self.content_weight * content + n * cooc) / (self.content_weight + n)
        return blended.astype(np.float32)


_CHUNK = 65_536  # content vectors compared per step in ``load_state``


VECTORED, SEARCHABLE, IN_INDEX = 1, 2, 4  # ``NewItemVectors._flags`` bits


class _LabelFlags:
    """Bit flags per index label (a growing uint8 array), with a count per bit."""

    def __init__(self) -> None:
        self.bits = np.zeros(0, np.uint8)
        self._counts = {VECTORED: 0, SEARCHABLE: 0, IN_INDEX: 0}

    def has(self, label: int, bit: int) -> bool:
        return 0 <= label < len(self.bits) and bool(self.bits[label] & bit)

    def count(self, bit: int) -> int:
        return self._counts[bit]

    def _grow(self, size: int) -> None:
        if size > len(self.bits):
            grown = np.zeros(max(size, len(self.bits) + len(self.bits) // 8, 16), np.uint8)
            grown[: len(self.bits)] = self.bits
            self.bits = grown

    def set(self, label: int, bit: int, on: bool) -> None:
        self._grow(label + 1)
        if bool(self.bits[label] & bit) != on:
            self.bits[label] ^= bit
            self._counts[bit] += 1 if on else -1

    def set_many(self, labels: np.ndarray, bit: int) -> None:
        """Set ``bit`` on every label of ``labels``."""
        if len(labels):
            self._grow(int(labels.max()) + 1)
            fresh = np.unique(labels[(self.bits[labels] & bit) == 0])
            self.bits[fresh] |= bit
            self._counts[bit] += len(fresh)

    def labels(self, bit: int) -> np.ndarray:
        return np.flatnonzero(self.bits & bit)


class _Content(Mapping[str, np.ndarray]):
    """Content vectors for a snapshot: those kept aside, and those the index holds (read from
    it when asked)."""

    def __init__(self, own: dict[str, np.ndarray], in_index: np.ndarray, index: ItemIndex) -> None:
        self._own, self._in_index, self._index = own, in_index, index

    def __getitem__(self, item_id: str) -> np.ndarray:
        if item_id in self._own:
            return self._own[item_id]
        label = int(self._index.labels_of([item_id])[0])
        pos = int(np.searchsorted(self._in_index, label))
        if label < 0 or pos >= len(self._in_index) or self._in_index[pos] != label:
            raise KeyError(item_id)
        return self._index.vectors_at(np.asarray([label]))[0]

    def __iter__(self) -> Iterator[str]:
        yield from self._own
        yield from self._index.ids_of(self._in_index.tolist())

    def __len__(self) -> int:
        return len(self._own) + len(self._in_index)
