"""Non-neural baselines, fit on the training portion only (pure numpy).

* ``popular``: an item's score is its number of interactions in the training portion; the same
  ranking for every user.
* ``cooc``: sequential item-to-item co-occurrence. ``C[a, b]`` counts how often ``b`` follows
  ``a`` within ``window`` steps in a training sequence; a user's score for ``b`` is the sum of
  ``C[h, b]`` over the last ``window`` history items ``h``, plus popularity scaled far below one
  co-occurrence as a tie-break (so users without co-occurrences get the popular ranking).

Both return scorers (:data:`streamrec.training.metrics.Scorer`), the shape
:mod:`streamrec.training.evaluate` expects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.training.metrics import Scorer

DEFAULT_WINDOW = 3


def _counts(train: dict[str, list[str]], index: dict[str, int]) -> np.ndarray:
    counts = np.zeros(len(index), dtype=np.float64)
    for seq in train.values():
        for item in seq:
            counts[index[item]] += 1.0
    return counts


def popularity_scorer(train: dict[str, list[str]], catalog: list[str]) -> Scorer:
    """Scores = interaction counts in ``train`` (columns in ``catalog`` order)."""
    counts = _counts(train, {item: i for i, item in enumerate(catalog)})

    def score(histories: Sequence[Sequence[str]]) -> np.ndarray:
        return np.tile(counts, (len(histories), 1))

    return score


class _Cooc:
    """``C`` in compressed sparse rows: row a holds (cols[indptr[a]:indptr[a+1]], weights)."""

    def __init__(self, train: dict[str, list[str]], index: dict[str, int], window: int) -> None:
        n = len(index)
        pairs: list[np.ndarray] = []
        for seq in train.values():
            ids = np.array([index[i] for i in seq], dtype=np.int64)
            for lag in range(1, window + 1):
                if len(ids) > lag:
                    pairs.append(ids[:-lag] * n + ids[lag:])
        keys = np.concatenate(pairs) if pairs else np.zeros(0, dtype=np.int64)
        unique, weights = np.unique(keys, return_counts=True)
        self.cols = unique % n
        self.weights = weights.astype(np.float64)
        self.indptr = np.searchsorted(unique // n, np.arange(n + 1))

    def row_sum(self, rows: list[int], size: int) -> np.ndarray:
        out = np.zeros(size, dtype=np.float64)
        for a in rows:
            lo, hi = self.indptr[a], self.indptr[a + 1]
            np.add.at(out, self.cols[lo:hi], self.weights[lo:hi])
        return out


def cooc_scorer(
    train: dict[str, list[str]], catalog: list[str], window: int = DEFAULT_WINDOW
) -> Scorer:
    """Sequential co-occurrence scores (see module docstring), columns in ``catalog`` order."""
    index = {item: i for i, item in enumerate(catalog)}
    counts = _counts(train, index)
    matrix = _Cooc(train, index, window)
    tie_break = counts / (counts.max() + 1.0) / (window + 1.0) * 1e-3

    def score(histories: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.empty((len(histories), len(catalog)), dtype=np.float64)
        for row, history in enumerate(histories):
            recent = [index[i] for i in history[-window:] if i in index]
            out[row] = matrix.row_sum(recent, len(catalog)) + tie_break
        return out

    return score
