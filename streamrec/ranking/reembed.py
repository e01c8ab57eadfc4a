"""Re-embedding the catalog for another model: a new index beside the one being served.

When the model changes, the item vectors change space. The new index holds:

- every item of the new model, with its trained vector;
- every other item the served index knows (added by the catalog, by events, or trained by the
  old model only), at the new model's *cold-start prior* (the centroid of its trained
  vectors), as a catalog item without a vector gets at start;
- each item's availability as the served index has it (a deleted item stays deleted).

Vectors the catalog supplied, and evidence vectors of new items, are in the old model's space
and are **dropped**: an item keeps the prior until the catalog sends a new vector (in the new
model's space) or, for a new item, until its next event writes an evidence vector computed
from the co-visitation counts (which do not depend on the model) and the new trained vectors.

The new index is built from a ``CatalogSnapshot`` taken on the serving thread (a copy of the
ids and their availability, O(items)), on another thread, while the served index keeps
changing; ``catch_up`` then applies, on the serving thread, what changed since the snapshot:
items added and availability flipped, at most a given number per call (each call also sees
what changed meanwhile), until none is left; then the new index can be swapped in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.ranking.index import ItemIndex

CATCH_UP_ROOM = 1024  # items the new index can take without growing (at least)


@dataclass
class CatalogSnapshot:
    """The served index's items and their availability at one moment (copies; ``catch_up``
    moves it forward).

    Attributes:
        ids: every item id, in label order.
        live: per item, whether it is available (searchable).
    """

    ids: list[str]
    live: np.ndarray


def snapshot(index: ItemIndex) -> CatalogSnapshot:
    """Copy the items of ``index`` and their availability (call on the thread that owns it)."""
    labels = np.arange(index.n_labels, dtype=np.int64)
    return CatalogSnapshot(ids=index.ids_of(labels.tolist()), live=index.live_mask(labels).copy())


def reembed(
    item_ids: Sequence[str],
    vectors: np.ndarray,
    catalog: CatalogSnapshot | None = None,
    m: int = 16,
    ef_construction: int = 200,
    ef_search: int = 128,
) -> ItemIndex:
    """An index of a model's items plus the items of ``catalog`` (module docstring).

    Args:
        item_ids: the model's items.
        vectors: their trained vectors [len(item_ids), dim].
        catalog: the served index's items (None: the model's items only, as at start).
        m: hnswlib graph degree.
        ef_construction: hnswlib build-time beam.
        ef_search: hnswlib query-time beam.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if catalog is None:
        return ItemIndex(
            item_ids, vectors, m=m, ef_construction=ef_construction, ef_search=ef_search
        )
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    prior = vectors.mean(axis=0) if len(vectors) else np.zeros(dim, np.float32)
    trained = set(item_ids)
    carried = [i for i in catalog.ids if i not in trained]
    rows = np.broadcast_to(prior.astype(np.float32), (len(carried), dim))
    index = ItemIndex(
        [*item_ids, *carried],
        np.vstack([vectors, rows]) if carried else vectors,
        m=m,
        ef_construction=ef_construction,
        ef_search=ef_search,
    )
    index.centroid = prior  # the trained items' centroid: the prior of later catalog items
    # room for the items ``catch_up`` adds on the serving thread (growing copies the graph)
    index.reserve(max(CATCH_UP_ROOM, len(catalog.ids) // 100))
    for item_id in np.asarray(catalog.ids, dtype=object)[~catalog.live].tolist():
        index.remove(item_id)
    return index


def catch_up(
    new: ItemIndex, served: ItemIndex, catalog: CatalogSnapshot, limit: int | None = None
) -> tuple[int, int]:
    """Apply to ``new`` what changed in ``served`` since ``catalog`` was taken, at most
    ``limit`` changes per call; ``catalog`` is moved forward over what was applied.

    Items added since are added (at the prior, or their trained vector when the new model
    knows them) with their availability; items whose availability flipped flip in ``new``.
    Flips cost a flag each, additions an HNSW insertion each: ``limit`` bounds the call.

    Returns:
        the changes applied, and those still to apply (0: ``new`` has caught up).
    """
    known = len(catalog.ids)
    flipped = np.flatnonzero(served.live_mask(np.arange(known, dtype=np.int64)) != catalog.live)
    added = np.arange(known, served.n_labels, dtype=np.int64)
    pending = len(flipped) + len(added)
    budget = pending if limit is None else max(0, limit)
    flips = flipped[:budget]
    adds = added[: max(0, budget - len(flips))]
    for label, item_id, live in zip(
        flips.tolist(),
        served.ids_of(flips.tolist()),
        served.live_mask(flips).tolist(),
        strict=True,
    ):
        new.upsert(item_id, None, bool(live))
        catalog.live[label] = live
    if len(adds):
        ids, live_added = served.ids_of(adds.tolist()), served.live_mask(adds)
        for item_id, live in zip(ids, live_added.tolist(), strict=True):
            new.upsert(item_id, None, bool(live))
        catalog.ids.extend(ids)
        catalog.live = np.concatenate([catalog.live, live_added])
    applied = len(flips) + len(adds)
    return applied, pending - applied
