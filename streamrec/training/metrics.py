"""Ranking metrics for one held-out target per user (pure numpy).

Ties are resolved by expectation over a random tie-break: a target with ``g`` candidates
scoring strictly higher and ``e`` other candidates scoring exactly the same sits at each
0-based rank ``g, g+1, ..., g+e`` with probability ``1/(e+1)``, and every metric is the
expectation over those ranks. This neither rewards a constant scorer (which a "count only
strictly greater" rule would: every target would be rank 0) nor punishes it beyond chance.

``Scorer`` is the shape of what gets measured: a scorer maps a batch of histories to scores over
the whole catalogue, float [B, num_items], columns in catalogue order
(:func:`streamrec.training.data.item_catalog`). It lives here, not in ``evaluate``, so that
``baselines`` need not import ``evaluate`` (which imports ``baselines``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

DEFAULT_KS = (10, 20)
Scorer = Callable[[Sequence[Sequence[str]]], np.ndarray]


def target_rank_counts(scores: np.ndarray, target: int) -> tuple[int, int]:
    """``(greater, ties)`` of ``scores[target]`` among the other entries of ``scores``.

    NaN scores count as lower than everything (a broken scorer must not look good).
    """
    raw = np.asarray(scores, dtype=np.float64)
    if np.isnan(raw[target]):
        return len(raw) - 1, 0
    values = np.nan_to_num(raw, nan=-np.inf)
    own = values[target]
    greater = int(np.count_nonzero(values > own))
    ties = int(np.count_nonzero(values == own)) - 1
    return greater, ties


def rank_metrics(
    greater: np.ndarray, ties: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS
) -> dict[str, float]:
    """Mean HR@k, NDCG@k and MRR over cases, ties by expected rank (see module docstring).

    Args:
        greater: per case, how many candidates score strictly higher than the target.
        ties: per case, how many other candidates score exactly the same as the target.
        ks: cut-offs for HR and NDCG.

    Returns:
        ``{"hr@k": ..., "ndcg@k": ..., "mrr": ...}``; all 0.0 when there are no cases.
    """
    g = np.asarray(greater, dtype=np.int64)
    e = np.asarray(ties, dtype=np.int64)
    if g.shape != e.shape or g.ndim != 1:
        raise ValueError("greater and ties must be 1-d arrays of the same length")
    if len(g) and (g.min() < 0 or e.min() < 0):
        raise ValueError("greater and ties must be non-negative")
    out: dict[str, float] = {}
    if len(g) == 0:
        return {**{f"{m}@{k}": 0.0 for k in ks for m in ("hr", "ndcg")}, "mrr": 0.0}
    top = int((g + e).max()) + 1
    ranks = np.arange(top + 1, dtype=np.float64)
    # Prefix sums over ranks 0..r-1, so a sum over ranks [lo, hi) is prefix[hi] - prefix[lo].
    recip = np.concatenate([[0.0], np.cumsum(1.0 / (ranks[:-1] + 1.0))])
    lo, hi, n = g, g + e + 1, (e + 1).astype(np.float64)
    for k in ks:
        gain = np.where(ranks[:-1] < k, 1.0 / np.log2(ranks[:-1] + 2.0), 0.0)
        gain_prefix = np.concatenate([[0.0], np.cumsum(gain)])
        hits = np.clip(np.minimum(hi, k) - lo, 0, None)
        out[f"hr@{k}"] = float(np.mean(hits / n))
        out[f"ndcg@{k}"] = float(np.mean((gain_prefix[hi] - gain_prefix[lo]) / n))
    out["mrr"] = float(np.mean((recip[hi] - recip[lo]) / n))
    return out
