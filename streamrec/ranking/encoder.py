"""Sequence encoders: histories of item vectors in, user vectors out.

``Encoder`` is the protocol the worker needs; ``OnnxEncoder`` runs the exported model with
onnxruntime (the worker never imports torch). ``testing.MeanEncoder`` is a fake for tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from streamrec.errors import ModelError
from streamrec.ranking.modelfiles import INPUT_HISTORY, INPUT_MASK, OUTPUT_USER


class Encoder(Protocol):
    """Turns histories (arrays [T_i, dim], oldest first, T_i >= 1) into user vectors [B, dim]."""

    dim: int
    max_len: int

    def encode(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Encode a batch of histories."""
        ...


def pad_batch(
    histories: Sequence[np.ndarray], dim: int, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad histories into ``(history [B, T, dim], mask [B, T])``, keeping the last max_len."""
    if not histories:
        raise ModelError("cannot encode an empty batch")
    longest = min(max_len, max(max(len(h), 1) for h in histories))
    batch = np.zeros((len(histories), longest, dim), dtype=np.float32)
    mask = np.zeros((len(histories), longest), dtype=np.float32)
    for row, hist in enumerate(histories):
        tail = np.asarray(hist, dtype=np.float32)[-longest:]
        if tail.size == 0:
            raise ModelError("cannot encode an empty history")
        if tail.ndim != 2 or tail.shape[1] != dim:
            raise ModelError(f"history shape {tail.shape} does not match dim {dim}")
        batch[row, longest - len(tail) :] = tail
        mask[row, longest - len(tail) :] = 1.0
    return batch, mask


class OnnxEncoder:
    """The exported sequence encoder on onnxruntime (CPU).

    Args:
        path: the ``encoder.onnx`` (or ``encoder.int8.onnx``) file.
        dim: item vector dimension.
        max_len: longest history the model reads.
        threads: onnxruntime intra-op threads.
    """

    def __init__(self, path: str | Path, dim: int, max_len: int, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load encoder {path}: {exc}") from exc
        names = {i.name for i in self._session.get_inputs()}
        if names != {INPUT_HISTORY, INPUT_MASK}:
            raise ModelError(f"encoder inputs are {sorted(names)}, expected history and mask")
        self.dim = dim
        self.max_len = max_len

    def encode(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Encode a batch of histories into user vectors [B, dim]."""
        batch, mask = pad_batch(histories, self.dim, self.max_len)
        (out,) = self._session.run([OUTPUT_USER], {INPUT_HISTORY: batch, INPUT_MASK: mask})
        return np.asarray(out, dtype=np.float32)
