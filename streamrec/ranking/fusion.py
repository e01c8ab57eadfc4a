"""Merging ranked candidate lists from several sources into one ranking (pure).

Two documented rules, chosen by ``method``:

* ``"rrf"`` -- weighted reciprocal-rank fusion (Cormack et al. 2009)::

      fused(i) = sum over sources s containing i:  w_s / (rrf_k + rank_s(i))

  with ``rank_s`` 1-based. Only ranks matter, so sources with incomparable scores (inner
  products, decayed counts, co-visitation weights) mix safely. A smaller ``rrf_k`` favours the
  head of each list more.
* ``"score"`` -- weighted score fusion: each source's scores are min-max normalised to [0, 1]
  over its own list (a single-item list normalises to 1), then ``fused(i) = sum w_s * norm_s(i)``.

Sources with weight <= 0 are ignored. Each fused item remembers the source that contributed most
to its score (its ``source``, for metrics and logs). Ties are broken by item id, so the result is
deterministic.

``fuse_arrays`` is the same rule over integer item keys and numpy arrays (the ranker's per-request
path): the same parts, summed in the same order, so the scores are identical to ``fuse``'s; the
ranking is read from it lazily (``FusedArrays.ranked``: only the head a request shows is
ordered). ``top_positions`` is the shared "n best scores, ties by item id" selection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

FusionMethod = Literal["rrf", "score"]
Candidates = Sequence[tuple[str, float]]


@dataclass(frozen=True, slots=True)
class Fused:
    """One merged candidate."""

    item_id: str
    score: float
    source: str


def _contributions(
    sources: Mapping[str, Candidates], weights: Mapping[str, float], method: str, rrf_k: float
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, cands in sources.items():
        weight = weights.get(name, 0.0)
        if weight <= 0 or not cands:
            continue
        if method == "rrf":
            parts = _rrf_parts(cands, weight, rrf_k)
        elif method == "score":
            parts = _score_parts(cands, weight)
        else:
            raise ValueError(f"unknown fusion method {method!r} (use 'rrf' or 'score')")
        for item_id, part in parts.items():
            out.setdefault(item_id, {})[name] = part
    return out


def _rrf_parts(cands: Candidates, weight: float, rrf_k: float) -> dict[str, float]:
    parts: dict[str, float] = {}
    for rank, (item_id, _score) in enumerate(cands, start=1):
        parts.setdefault(item_id, weight / (rrf_k + rank))  # first (best) occurrence wins
    return parts


def _score_parts(cands: Candidates, weight: float) -> dict[str, float]:
    best: dict[str, float] = {}
    for item_id, score in cands:
        if item_id not in best or score > best[item_id]:
            best[item_id] = float(score)
    low, high = min(best.values()), max(best.values())
    span = high - low
    return {i: weight * ((s - low) / span if span > 0 else 1.0) for i, s in best.items()}


def fuse(
    sources: Mapping[str, Candidates],
    weights: Mapping[str, float],
    method: FusionMethod = "rrf",
    rrf_k: float = 60.0,
) -> list[Fused]:
    """Merge candidate lists (each best first) into one list, best first.

    Args:
        sources: per source name, ``(item_id, score)`` pairs, best first.
        weights: per source name, its weight (missing or <= 0: the source is ignored).
        method: ``"rrf"`` or ``"score"`` (module docstring).
        rrf_k: the RRF constant (``method="rrf"`` only); must be >= 0.

    Returns:
        Every item of a weighted source once, by fused score descending, ties by item id.
    """
    if rrf_k < 0:
        raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
    merged = []
    for item_id, parts in _contributions(sources, weights, method, rrf_k).items():
        source = max(parts.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merged.append(Fused(item_id=item_id, score=sum(parts.values()), source=source))
    merged.sort(key=lambda f: (-f.score, f.item_id))
    return merged


ArrayCandidates = tuple[np.ndarray, np.ndarray]  # (item keys int64, scores float64), best first
NamesOf = Callable[[np.ndarray], Sequence[str]]  # item ids of an array of keys
OrderOf = Callable[[np.ndarray], np.ndarray]  # per key, an integer ordered as the item ids


def top_positions(scores: np.ndarray, n: int, keys: np.ndarray, order_of: OrderOf) -> np.ndarray:
    """Positions of the ``n`` best ``scores``, best first, ties by item id.

    ``order_of(keys)`` gives integers in the order of the keys' item ids (e.g.
    ``ItemIndex.id_order``). Only the head is ordered: every position scoring at least the
    ``n``-th best, so a tie across the cut is ordered in full.
    """
    size = len(scores)
    if n <= 0 or size == 0:
        return np.zeros(0, dtype=np.int64)
    if n < size:
        kth = np.partition(scores, size - n)[size - n]
        head = np.flatnonzero(scores >= kth)
    else:
        head = np.arange(size)
    values = scores[head]
    order = np.argsort(-values, kind="stable")
    ordered = values[order]
    if (ordered[1:] == ordered[:-1]).any():
        order = np.lexsort((order_of(keys[head]), -values))
    return head[order[:n]]


@dataclass(frozen=True, slots=True)
class FusedArrays:
    """The result of ``fuse_arrays``: every item of a weighted source, unordered.

    Attributes:
        keys: the items (unique int64 keys, in no particular order).
        scores: their fused scores.
        parts: per contributing source, in contribution order, its part per item (NaN where
            the source does not hold the item).
    """

    keys: np.ndarray
    scores: np.ndarray
    parts: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.keys)

    def ranked(self, n: int, order_of: OrderOf) -> np.ndarray:
        """Positions of the ``n`` best items, best first (``fuse``'s order; ``top_positions``)."""
        return top_positions(self.scores, n, self.keys, order_of)

    def sources_of(self, positions: np.ndarray) -> list[str]:
        """Per item, the source that contributed most (ties by source name, as ``fuse``)."""
        if len(positions) == 0:
            return []
        names = sorted(self.parts, reverse=True)  # argmax keeps the first of tied maxima
        stacked = np.stack([self.parts[name][positions] for name in names])
        best = np.argmax(np.where(np.isnan(stacked), -np.inf, stacked), axis=0)
        return [names[i] for i in best.tolist()]

    def fused(self, positions: np.ndarray, names_of: NamesOf) -> list[Fused]:
        """``Fused`` values of the items at ``positions``."""
        ids = names_of(self.keys[positions])
        scores = self.scores[positions].tolist()
        sources = self.sources_of(positions)
        return [Fused(*item) for item in zip(ids, scores, sources, strict=True)]

    def score_of(self, keys: np.ndarray) -> np.ndarray:
        """The fused score of each key (0.0 for a key not fused)."""
        if len(self.keys) == 0:
            return np.zeros(len(keys), dtype=np.float64)
        order = np.argsort(self.keys)
        at = order[np.minimum(np.searchsorted(self.keys, keys, sorter=order), len(order) - 1)]
        return np.where(self.keys[at] == keys, self.scores[at], 0.0)


def fuse_arrays(
    sources: Mapping[str, ArrayCandidates],
    weights: Mapping[str, float],
    method: FusionMethod = "rrf",
    rrf_k: float = 60.0,
    scratch: np.ndarray | None = None,
) -> FusedArrays:
    """``fuse`` over integer item keys: per source ``(keys, scores)`` arrays, best first.

    The parts and their sums are computed with the same floating-point operations, in the same
    order, as ``fuse``, so ``fused(ranked(len))`` equals ``fuse`` on the same candidates (with
    the keys' ids).

    Args:
        scratch: optional int64 work array longer than the largest key (its contents are
            overwritten): items are then matched up through it instead of by sorting.
    """
    if rrf_k < 0:
        raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
    used = []
    for name, (keys, scores) in sources.items():
        weight = weights.get(name, 0.0)
        if weight > 0 and len(keys):
            if method not in ("rrf", "score"):
                raise ValueError(f"unknown fusion method {method!r} (use 'rrf' or 'score')")
            used.append((name, weight, np.asarray(keys, dtype=np.int64), scores))
    if not used:
        return FusedArrays(np.zeros(0, np.int64), np.zeros(0, np.float64), {})
    unique, where = _unique_inverse(np.concatenate([u[2] for u in used]), scratch)
    total = np.zeros(len(unique), dtype=np.float64)
    parts: dict[str, np.ndarray] = {}
    start = 0
    for name, weight, keys, scores in used:  # in source order, as ``sum(parts.values())``
        at = where[start : start + len(keys)]
        start += len(keys)
        if method == "rrf":
            part = weight / (rrf_k + np.arange(1, len(keys) + 1))
            if np.bincount(at).max() > 1:  # repeated items: the first (best) occurrence wins
                _, first = np.unique(at, return_index=True)
                first.sort()
                at, part = at[first], part[first]
        else:
            at, best = _best_scores(at, np.asarray(scores, dtype=np.float64))
            low, high = float(best.min()), float(best.max())
            span = high - low
            part = weight * ((best - low) / span) if span > 0 else np.full(len(best), weight * 1.0)
        total[at] += part
        column = np.full(len(unique), np.nan)
        column[at] = part
        parts[name] = column
    return FusedArrays(unique, total, parts)


def _unique_inverse(keys: np.ndarray, scratch: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(unique keys, per key its index in them), by sorting or through ``scratch``."""
    if scratch is None:
        return np.unique(keys, return_inverse=True)
    where = np.arange(len(keys))
    scratch[keys] = where  # one position of each key (whichever numpy writes last)
    marked = scratch[keys]
    chosen = marked == where
    slot = np.cumsum(chosen) - 1  # per chosen position, its index among the unique keys
    return keys[chosen], slot[marked]


def _best_scores(keys: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per key (first-occurrence order), its highest score (``_score_parts``'s ``best``)."""
    if np.bincount(keys).max() <= 1:
        return keys, scores
    best: dict[int, float] = {}
    for key, score in zip(keys.tolist(), scores.tolist(), strict=True):
        if key not in best or score > best[key]:
            best[key] = score
    return np.fromiter(best, dtype=np.int64, count=len(best)), np.fromiter(
        best.values(), dtype=np.float64, count=len(best)
    )
