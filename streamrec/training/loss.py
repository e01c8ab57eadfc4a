"""Training losses of the sequence encoder: full softmax, or a sampled softmax for big catalogs.

* ``full``: cross-entropy over every catalog item at every position (Klenitskiy & Vasilev 2023,
  "SASRec with CE"). Its cost is positions x items x dim per step: fine at MovieLens' 1,682 items,
  10x the rest of the step at 25,000 items, impossible at 1,000,000.
* ``sampled``: cross-entropy over the positive and ``negatives`` items drawn once per batch and
  shared by all of the batch's positions (one [positions x negatives] matmul, the "SASRec+" recipe
  of the same authors). Negatives are drawn from the items' training frequency raised to
  ``alpha`` (0 = uniform, 1 = popularity); every logit is corrected by ``-log q(item)``, the
  log of the item's expected count in the draw (Jean et al. 2015; Yi et al. 2019), so the loss
  stays an unbiased-in-the-limit estimate of the full softmax whatever ``alpha`` is. A negative
  equal to a position's own target (an accidental hit) is masked out of that position's row.
* ``auto`` picks ``full`` up to ``full_softmax_max_items`` items and ``sampled`` above (the
  threshold and the number of negatives are measured in BENCHMARKS.md, "Training at catalog
  scale").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812 - the usual alias

LOSSES = ("auto", "full", "sampled")


@dataclass(frozen=True)
class LossPlan:
    """The loss a run uses, resolved from the settings and the catalog size."""

    kind: str  # "full" or "sampled"
    negatives: int  # 0 for full


def resolve_loss(
    loss: str, num_items: int, full_softmax_max_items: int, negatives: int
) -> LossPlan:
    """``auto`` -> ``full`` for catalogs up to ``full_softmax_max_items``, else ``sampled``.

    Raises:
        ValueError: an unknown loss, or fewer than one negative for the sampled softmax.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    kind = loss
    if loss == "auto":
        kind = "full" if num_items <= full_softmax_max_items else "sampled"
    if kind == "full":
        return LossPlan("full", 0)
    if negatives < 1:
        raise ValueError(f"the sampled softmax needs >= 1 negative, got {negatives}")
    return LossPlan("sampled", min(negatives, max(1, num_items - 1)))


class NegativeSampler:
    """Draws shared negatives with probability ``q ~ (count + 1) ** alpha`` (0-based rows).

    Args:
        counts: training occurrences per item row.
        alpha: 0 draws uniformly, 1 by popularity.
        generator: torch generator (seeded by the trainer: runs stay deterministic).
    """

    def __init__(self, counts: np.ndarray, alpha: float, generator: torch.Generator) -> None:
        weights = (np.asarray(counts, dtype=np.float64) + 1.0) ** alpha
        self.uniform = alpha == 0.0
        self.probs = torch.from_numpy(weights / weights.sum())
        self.log_q = torch.log(self.probs).to(torch.float32)
        self.generator = generator

    def draw(self, n: int) -> torch.Tensor:
        """``n`` item rows, with replacement."""
        if self.uniform:
            return torch.randint(0, len(self.probs), (n,), generator=self.generator)
        return torch.multinomial(self.probs, n, replacement=True, generator=self.generator)


def full_softmax(h: torch.Tensor, y: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of positions ``h`` [P, D] with targets ``y`` [P] over ``table``."""
    return F.cross_entropy(h @ table.T, y)


def negative_logits(
    h: torch.Tensor,
    y: torch.Tensor,
    neg_vectors: torch.Tensor,
    negs: torch.Tensor,
    sampler: NegativeSampler,
) -> torch.Tensor:
    """[P, N] logits of the shared negatives, corrected by ``-log q``, accidental hits masked.

    ``logsumexp`` of a row minus ``log N`` estimates ``log`` of the sum of ``exp(score)`` over
    every item but the position's target (importance sampling): what the full softmax normalises
    by, whatever the draw's skew.
    """
    neg = h @ neg_vectors.T
    if not sampler.uniform:
        neg = neg - sampler.log_q[negs].unsqueeze(0)
    return neg.masked_fill(negs.unsqueeze(0) == y.unsqueeze(1), float("-inf"))


def sampled_softmax(
    h: torch.Tensor,
    y: torch.Tensor,
    rows: Callable[[torch.Tensor], torch.Tensor],
    negs: torch.Tensor,
    sampler: NegativeSampler,
) -> torch.Tensor:
    """Mean cross-entropy over [positive, shared negatives], logits corrected by ``-log q``.

    ``rows`` maps 0-based item rows to their vectors (the model's table, read so that only the
    rows used get a gradient). With uniform negatives the correction is one constant for every
    logit and is skipped.
    """
    pos = (h * rows(y)).sum(-1, keepdim=True)
    if not sampler.uniform:
        pos = pos - sampler.log_q[y].unsqueeze(1)
    logits = torch.cat([pos, negative_logits(h, y, rows(negs), negs, sampler)], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(y))
