"""The model learns a planted sequential pattern far better than popularity."""

from __future__ import annotations

from pathlib import Path

from needs import require_module

from streamrec.training.baselines import popularity_scorer
from streamrec.training.data import training_sequences
from streamrec.training.evaluate import build_cases, evaluate_scorer, model_scorer
from streamrec.training.offline import load_model

from .synthetic import TINY, planted_sequences


def test_planted_successor_is_learned(tiny_model_dir: Path) -> None:
    sequences = planted_sequences()
    cases = build_cases(sequences, cut=1, negatives=None)
    model = evaluate_scorer(model_scorer(load_model(tiny_model_dir), cases.catalog), cases)
    popular = evaluate_scorer(
        popularity_scorer(training_sequences(sequences, 2), cases.catalog), cases
    )
    # 40 items, 11 history items excluded: chance HR@10 is about 10/29.
    assert popular["hr@10"] < 0.5
    assert model["hr@10"] >= 0.95
    assert model["mrr"] >= 0.8
    assert model["hr@10"] > popular["hr@10"] + 0.4


def test_training_is_deterministic_for_a_seed() -> None:
    torch = require_module("torch")
    from streamrec.training.train import TrainConfig, train

    data = planted_sequences(users=60)
    config = TrainConfig(holdout=2, epochs=2, batch_size=16, progress=False, threads=1, **TINY)
    first, again = train(data, config), train(data, config)
    other = train(data, TrainConfig(**{**config.__dict__, "seed": 1}))
    for name, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[name]), name
    timeless = [
        [{k: v for k, v in h.items() if k != "seconds"} for h in r.history] for r in (first, again)
    ]
    assert timeless[0] == timeless[1]
    assert not torch.equal(first.model.item_vectors(), other.model.item_vectors())
