"""The sampled softmax: equal to the full softmax when it samples everything, unbiased
(up to a constant) with the log-q correction under a skewed draw, and it trains."""

from __future__ import annotations

import math

import numpy as np
import pytest
from needs import require_module

from .synthetic import TINY, planted_sequences

torch = require_module("torch")

from streamrec.training.loss import (  # noqa: E402 - after the torch check
    LossPlan,
    NegativeSampler,
    full_softmax,
    negative_logits,
    resolve_loss,
    sampled_softmax,
)


def test_auto_picks_full_for_small_catalogs_and_sampled_above() -> None:
    assert resolve_loss("auto", 1682, 10_000, 1024) == LossPlan("full", 0)
    assert resolve_loss("auto", 25_000, 10_000, 1024) == LossPlan("sampled", 1024)
    assert resolve_loss("sampled", 50, 10_000, 1024) == LossPlan("sampled", 49)
    assert resolve_loss("full", 10**6, 10_000, 1024) == LossPlan("full", 0)
    with pytest.raises(ValueError, match="loss must be one of"):
        resolve_loss("bpr", 10, 10, 10)
    with pytest.raises(ValueError, match=">= 1 negative"):
        resolve_loss("sampled", 10, 10, 0)


def _case(items: int = 50, positions: int = 30, dim: int = 8) -> tuple:
    g = torch.Generator().manual_seed(0)
    table = torch.randn(items, dim, generator=g)
    h = torch.randn(positions, dim, generator=g)
    y = torch.randint(0, items, (positions,), generator=g)
    return h, y, table, g


def test_sampling_every_item_once_is_the_full_softmax() -> None:
    h, y, table, g = _case()
    uniform = NegativeSampler(np.ones(len(table)), 0.0, g)
    every = torch.arange(len(table))  # the positive's own column is masked as an accidental hit
    full = full_softmax(h, y, table)
    rows = table.__getitem__
    assert torch.allclose(sampled_softmax(h, y, rows, every, uniform), full, atol=1e-6)


def test_log_q_correction_removes_the_bias_of_a_skewed_draw() -> None:
    h, y, table, g = _case()
    counts = np.arange(1, len(table) + 1, dtype=np.float64) ** 2  # very skewed
    skewed = NegativeSampler(counts, 1.0, g)
    n = 20_000
    scores = h @ table.T
    scores[torch.arange(len(y)), y] = float("-inf")
    want = torch.logsumexp(scores, dim=1)  # what the full softmax normalises by (target aside)
    draw = skewed.draw(n)
    negs = table[draw]
    corrected = torch.logsumexp(negative_logits(h, y, negs, draw, skewed), dim=1) - math.log(n)
    skewed.uniform = True  # the same draw without the correction
    plain = torch.logsumexp(negative_logits(h, y, negs, draw, skewed), dim=1) - math.log(n)
    assert float((corrected - want).abs().mean()) < 0.05
    assert float((plain - want).abs().mean()) > 0.3, "the draw is not skewed enough"


def test_the_draw_follows_frequency_to_the_alpha() -> None:
    g = torch.Generator().manual_seed(1)
    sampler = NegativeSampler(np.array([0.0, 3.0, 8.0]), 1.0, g)  # weights 1, 4, 9
    drawn = np.bincount(sampler.draw(140_000).numpy(), minlength=3) / 140_000
    assert np.allclose(drawn, [1 / 14, 4 / 14, 9 / 14], atol=0.01)


@pytest.mark.parametrize("alpha", [0.0, 0.75])
def test_the_sampled_softmax_learns_the_planted_pattern(alpha: float) -> None:
    from streamrec.training.evaluate import build_cases, evaluate_scorer
    from streamrec.training.train import TrainConfig, _torch_scorer, train

    sequences = planted_sequences()
    config = TrainConfig(
        holdout=2,
        epochs=30,
        batch_size=32,
        progress=False,
        loss="sampled",
        sampled_negatives=8,
        negative_alpha=alpha,
        **TINY,
    )
    result = train(sequences, config)
    assert result.loss == LossPlan("sampled", 8)
    cases = build_cases(sequences, cut=1, negatives=None)
    index = {item: i + 1 for i, item in enumerate(result.item_ids)}
    metrics = evaluate_scorer(_torch_scorer(result.model, index, TINY["max_len"]), cases)
    assert metrics["hr@10"] >= 0.9, metrics
