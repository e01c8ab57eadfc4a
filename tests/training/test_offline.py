"""load_model: score and recommend with onnxruntime only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamrec.errors import ModelError
from streamrec.training.offline import load_model


def test_score_matches_user_vector_and_handles_unknowns(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    history = ["item-3", "item-4", "item-5"]
    candidates = ["item-6", "item-20", "no-such-item"]
    scores = model.score(history, candidates)
    user = model.user_vectors([history])[0]
    rows = [model.item_ids.index(c) for c in candidates[:2]]
    assert scores.dtype == np.float32 and scores.shape == (3,)
    np.testing.assert_allclose(scores[:2], model.item_vectors[rows] @ user, rtol=1e-5, atol=1e-5)
    assert scores[2] == -np.inf
    # Unknown history ids are skipped.
    np.testing.assert_allclose(model.score(["x", *history, "y"], candidates), scores, atol=1e-6)
    with pytest.raises(ModelError, match="no item known"):
        model.score(["x", "y"], candidates)


def test_recommend_ranks_the_catalogue(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    history = ["item-10", "item-11", "item-12"]
    top = model.recommend(history, k=5)
    assert len(top) == 5
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    assert top[0][0] == "item-13"  # the planted successor
    all_scores = model.score(history, model.item_ids)
    assert top[0][1] == pytest.approx(float(all_scores.max()), abs=1e-5)
    excluded = model.recommend(history, k=len(model.item_ids), exclude_history=True)
    assert not {item for item, _ in excluded} & set(history)
    assert len(excluded) == len(model.item_ids) - 3
    assert model.recommend(history, k=0) == []
    with pytest.raises(ModelError):
        model.recommend(history, k=-1)


def test_long_histories_are_truncated_and_int8_is_close(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    max_len = model.meta.max_len
    long = [f"item-{i % 40}" for i in range(3 * max_len)]
    np.testing.assert_allclose(
        model.user_vectors([long]), model.user_vectors([long[-max_len:]]), atol=1e-6
    )
    quantised = load_model(tiny_model_dir, int8=True)
    assert quantised.recommend(long, k=1)[0][0] == model.recommend(long, k=1)[0][0]
    assert np.all(model.user_vectors([[]]) == 0.0)


def test_missing_directory_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        load_model(tmp_path)
