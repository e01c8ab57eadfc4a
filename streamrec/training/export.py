"""Export a trained encoder to ONNX, check it against torch, and write the model directory.

The graph is exported with the TorchScript exporter (``dynamo=False``): it needs no extra
packages and keeps the batch and history axes dynamic. Every export is checked with
onnxruntime on random left-padded histories of length 1, ``max_len`` and a few in between;
an fp32 difference above :data:`PARITY_TOLERANCE` raises :class:`ModelError`. The optional
int8 encoder (``onnxruntime.quantization.quantize_dynamic``) is checked more loosely (its
error is recorded in ``meta.json`` under ``extra.int8_max_abs_diff``).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamrec.errors import ModelError
from streamrec.ranking.modelfiles import (
    INPUT_HISTORY,
    INPUT_MASK,
    OUTPUT_USER,
    ModelMeta,
    write_model_dir,
)
from streamrec.training.model import SASRec, UserEncoder

OPSET = 17
PARITY_TOLERANCE = 1e-4


def random_histories(
    vectors: np.ndarray, lengths: list[int], width: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded histories of random catalogue items, one per length, padded to ``width``."""
    rng = np.random.default_rng(seed)
    history = np.zeros((len(lengths), width, vectors.shape[1]), dtype=np.float32)
    mask = np.zeros((len(lengths), width), dtype=np.float32)
    for row, length in enumerate(lengths):
        items = rng.integers(0, len(vectors), size=length)
        history[row, width - length :] = vectors[items]
        mask[row, width - length :] = 1.0
    return history, mask


def onnx_bytes(model: SASRec) -> bytes:
    """Serialise the user encoder of ``model`` to ONNX (dynamic batch and history length)."""
    encoder = UserEncoder(model).eval()
    dim, max_len = model.config.dim, model.config.max_len
    example = (torch.zeros(2, max_len, dim), torch.ones(2, max_len))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The TorchScript exporter announces its deprecation in favour of dynamo, which
        # would need onnxscript; the graph it writes is checked below either way.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        path = Path(tmp) / "encoder.onnx"
        with torch.no_grad():
            torch.onnx.export(
                encoder,
                example,
                str(path),
                input_names=[INPUT_HISTORY, INPUT_MASK],
                output_names=[OUTPUT_USER],
                dynamic_axes={
                    INPUT_HISTORY: {0: "batch", 1: "length"},
                    INPUT_MASK: {0: "batch", 1: "length"},
                    OUTPUT_USER: {0: "batch"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
        return path.read_bytes()


def _session(data: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def parity_lengths(max_len: int) -> list[int]:
    """History lengths the parity check covers: 1, max_len and a spread in between."""
    return sorted({1, 2, max(1, max_len // 3), max(1, max_len // 2), max(1, max_len - 1), max_len})


def max_abs_diff(model: SASRec, data: bytes, seed: int = 0) -> float:
    """Largest |torch - onnxruntime| over user vectors of random histories.

    Covers batches padded to ``max_len`` and, separately, unpadded batches of length T for each
    T in :func:`parity_lengths` (so the dynamic history axis is exercised).
    """
    session = _session(data)
    encoder = UserEncoder(model).eval()
    vectors = model.item_vectors().detach().numpy()
    max_len = model.config.max_len
    lengths = parity_lengths(max_len)
    worst = 0.0
    cases = [random_histories(vectors, lengths, max_len, seed)]
    cases += [random_histories(vectors, [t, t], t, seed + t) for t in lengths]
    for history, mask in cases:
        with torch.no_grad():
            expected = encoder(torch.from_numpy(history), torch.from_numpy(mask)).numpy()
        (got,) = session.run([OUTPUT_USER], {INPUT_HISTORY: history, INPUT_MASK: mask})
        worst = max(worst, float(np.max(np.abs(expected - got))))
    return worst


class _DropPreprocessHint(logging.Filter):
    """Drops onnxruntime's "consider pre-processing" hint, logged on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_int8(data: bytes) -> bytes:
    """Dynamic int8 quantisation of the weights (activations stay float)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    quiet = _DropPreprocessHint()
    root.addFilter(quiet)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            src.write_bytes(data)
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
            return dst.read_bytes()
    finally:
        root.removeFilter(quiet)


def export_model_dir(
    model: SASRec,
    item_ids: list[str],
    out: str | Path,
    extra: dict[str, Any] | None = None,
    int8: bool = False,
) -> ModelMeta:
    """Export ``model`` and write a complete model directory.

    Args:
        model: trained encoder; item ``item_ids[i]`` is row ``i + 1`` of its item table.
        item_ids: catalogue ids.
        out: directory to write.
        extra: training facts stored in ``meta.json``.
        int8: also write ``encoder.int8.onnx``.

    Raises:
        ModelError: onnxruntime disagrees with torch by more than :data:`PARITY_TOLERANCE`.
    """
    model = model.eval()
    data = onnx_bytes(model)
    diff = max_abs_diff(model, data)
    if not diff <= PARITY_TOLERANCE:
        raise ModelError(f"ONNX export differs from torch by {diff:.3g} > {PARITY_TOLERANCE}")
    facts = dict(extra or {})
    facts["onnx_max_abs_diff"] = diff
    facts["opset"] = OPSET
    int8_data = None
    if int8:
        int8_data = quantize_int8(data)
        facts["int8_max_abs_diff"] = max_abs_diff(model, int8_data)
    vectors = model.item_vectors().detach().numpy()
    return write_model_dir(
        out,
        data,
        item_ids,
        vectors,
        max_len=model.config.max_len,
        extra=facts,
        int8_onnx_bytes=int8_data,
    )
