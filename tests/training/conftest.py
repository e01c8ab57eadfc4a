"""Shared fixtures: a tiny trained model directory (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
from needs import require_module

from .synthetic import TINY, planted_sequences


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained briefly on the planted ring data, exported with int8."""
    require_module("torch")
    from streamrec.training.export import export_model_dir
    from streamrec.training.train import TrainConfig, train

    config = TrainConfig(holdout=2, epochs=25, batch_size=32, lr=5e-3, progress=False, threads=1)
    config = TrainConfig(**{**config.__dict__, **TINY})
    result = train(planted_sequences(), config)
    out = tmp_path_factory.mktemp("tiny-model")
    export_model_dir(result.model, result.item_ids, out, extra=result.facts(), int8=True)
    return out
