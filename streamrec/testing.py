"""Fakes and factories for tests (ours and users'): no broker, no model file needed.

- ``MeanEncoder``: an ``Encoder`` whose user vector is the mean of the history's vectors.
- ``FakeClock``: a settable clock for code that takes ``clock=``.
- ``make_event`` / ``make_catalog_op``: valid records with overridable fields.
- ``random_index``: an ``ItemIndex`` over random unit vectors.
- ``MemoryStateReader``: the reads a ``Pipeline`` needs, from dicts
  (``streamrec.state.memory``, re-exported here).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from streamrec.core.events import CatalogOp, Event
from streamrec.ranking.index import ItemIndex
from streamrec.state.memory import MemoryStateReader

__all__ = [
    "FakeClock",
    "MeanEncoder",
    "MemoryStateReader",
    "make_catalog_op",
    "make_event",
    "random_index",
]

_counter = itertools.count()


class MeanEncoder:
    """User vector = mean of the history's item vectors (the last max_len)."""

    def __init__(self, dim: int, max_len: int = 50) -> None:
        self.dim = dim
        self.max_len = max_len

    def encode(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Mean of each history's last max_len vectors."""
        return np.stack(
            [np.asarray(h, dtype=np.float32)[-self.max_len :].mean(axis=0) for h in histories]
        ).astype(np.float32)


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


def make_event(**fields: Any) -> Event:
    """A valid event; any field can be overridden."""
    n = next(_counter)
    base: dict[str, Any] = {
        "event_id": f"ev-{n}",
        "user_id": "u1",
        "item_id": "i1",
        "type": "click",
        "ts": 1_700_000_000_000 + n,
    }
    base.update(fields)
    return Event(**base)


def make_catalog_op(**fields: Any) -> CatalogOp:
    """A valid catalog upsert; any field can be overridden."""
    base: dict[str, Any] = {"item_id": "i1", "op": "upsert", "available": True, "ts": 0}
    base.update(fields)
    return CatalogOp(**base)


def random_index(n_items: int = 100, dim: int = 8, seed: int = 0) -> ItemIndex:
    """An index of items ``i0..i{n-1}`` with random unit vectors."""
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n_items, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return ItemIndex([f"i{i}" for i in range(n_items)], vecs)
