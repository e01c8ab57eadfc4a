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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

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
