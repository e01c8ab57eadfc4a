"""ONNX export: torch and onnxruntime agree on every history length, with and without padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from needs import require_module

from streamrec.errors import ModelError

from .synthetic import TINY

torch = require_module("torch")
ort = require_module("onnxruntime")

from streamrec.training.export import export_model_dir, onnx_bytes  # noqa: E402
from streamrec.training.model import ModelConfig, SASRec, UserEncoder  # noqa: E402


def _model(seed: int) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(ModelConfig(num_items=30, **TINY)).eval()


def _padded(rng: np.random.Generator, vectors: np.ndarray, length: int, width: int):  # type: ignore[no-untyped-def]
    history = np.zeros((3, width, vectors.shape[1]), dtype=np.float32)
    mask = np.zeros((3, width), dtype=np.float32)
    for row in range(3):
        items = rng.integers(0, len(vectors), size=length)
        history[row, width - length :] = vectors[items]
        mask[row, width - length :] = 1.0
    return history, mask


def test_parity_on_every_length_padded_and_unpadded() -> None:
    model = _model(0)
    session = ort.InferenceSession(onnx_bytes(model), providers=["CPUExecutionProvider"])
    encoder = UserEncoder(model).eval()
    vectors = model.item_vectors().detach().numpy()
    rng = np.random.default_rng(0)
    max_len = TINY["max_len"]
    for length in range(1, max_len + 1):
        for width in {length, max_len}:
            history, mask = _padded(rng, vectors, length, width)
            with torch.no_grad():
                expected = encoder(torch.from_numpy(history), torch.from_numpy(mask)).numpy()
            (got,) = session.run(["user"], {"history": history, "mask": mask})
            assert got.shape == (3, TINY["dim"])
            assert np.max(np.abs(expected - got)) <= 1e-4, (length, width)
            assert np.max(np.abs(expected @ vectors.T - got @ vectors.T)) <= 1e-4


def test_left_padding_does_not_change_the_user_vector() -> None:
    model = _model(1)
    vectors = model.item_vectors().detach().numpy()
    history, mask = _padded(np.random.default_rng(1), vectors, 5, 5)
    wide_h = np.concatenate([np.zeros((3, 7, vectors.shape[1]), np.float32), history], axis=1)
    wide_m = np.concatenate([np.zeros((3, 7), np.float32), mask], axis=1)
    encoder = UserEncoder(model).eval()
    with torch.no_grad():
        short = encoder(torch.from_numpy(history), torch.from_numpy(mask))
        wide = encoder(torch.from_numpy(wide_h), torch.from_numpy(wide_m))
    assert torch.allclose(short, wide, atol=1e-5)


def test_attention_is_causal() -> None:
    model = _model(2)
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    changed = torch.tensor([[3, 4, 5, 6, 9]])
    with torch.no_grad():
        before, after = model(ids), model(changed)
    assert torch.allclose(before[:, :4], after[:, :4], atol=1e-6)
    assert not torch.allclose(before[:, 4], after[:, 4], atol=1e-4)


def test_export_fails_loudly_when_onnx_disagrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamrec.training.export as export

    other = onnx_bytes(_model(4))
    monkeypatch.setattr(export, "onnx_bytes", lambda model: other)
    with pytest.raises(ModelError, match="differs from torch"):
        export_model_dir(_model(3), [f"i{i}" for i in range(30)], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_model_dir_contents(tiny_model_dir: Path) -> None:
    from streamrec.ranking.modelfiles import read_model_dir, verify_manifest

    files = read_model_dir(tiny_model_dir)
    verify_manifest(tiny_model_dir)  # written last, covering the int8 encoder too
    assert files.meta.max_len == TINY["max_len"] and files.meta.dim == TINY["dim"]
    assert files.meta.extra["onnx_max_abs_diff"] <= 1e-4
    assert files.encoder_path(int8=True).is_file()
    assert files.meta.extra["best_epoch"] >= 1
