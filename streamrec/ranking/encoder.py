"""Sequence encoders: histories of item vectors in, user vectors out.

``Encoder`` is the protocol the worker needs; ``OnnxEncoder`` runs the exported model with
onnxruntime (the worker never imports torch). ``testing.MeanEncoder`` is a fake for tests.

A batch is padded to its longest history, so one long history makes every row pay for its
length. ``encode_bucketed`` runs the encoder once per bucket of similar lengths, the buckets
chosen to minimise a cost model of the exported transformer (a fixed cost per run plus a cost
per padded position that grows with the length, attention). A history's vector does not
depend on the padding in exact arithmetic; in float32 it may move in the last bit.
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


# Cost model of one encoder run (measured on the exported SASRec encoder, onnxruntime, 1 thread):
# about BUCKET_RUN_POSITIONS padded positions of fixed cost, and a position costs
# (1 + length / BUCKET_ATTENTION_LENGTH) units at a padded length of ``length``.
BUCKET_RUN_POSITIONS = 24.0
BUCKET_ATTENTION_LENGTH = 170.0


def length_buckets(
    lengths: Sequence[int],
    run_positions: float = BUCKET_RUN_POSITIONS,
    attention_length: float = BUCKET_ATTENTION_LENGTH,
) -> list[np.ndarray]:
    """Rows grouped into runs of similar (padded) length, minimising the modelled cost.

    Rows are sorted by length (stable) and cut into contiguous buckets by dynamic programming
    over the distinct lengths. Returns the row indices of each bucket, shortest first.
    """
    if len(lengths) == 0:
        return []
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lens, kind="stable")
    distinct, counts = np.unique(lens, return_counts=True)
    ends = np.concatenate(([0], np.cumsum(counts)))  # rows before each distinct length
    row_cost = distinct * (1.0 + distinct / attention_length)
    best = np.zeros(len(distinct) + 1)
    cut = np.zeros(len(distinct) + 1, dtype=np.int64)
    for j in range(1, len(distinct) + 1):  # bucket = distinct[i:j], padded to distinct[j - 1]
        costs = best[:j] + run_positions + (ends[j] - ends[:j]) * row_cost[j - 1]
        cut[j] = int(np.argmin(costs))
        best[j] = costs[cut[j]]
    buckets = []
    j = len(distinct)
    while j > 0:
        i = int(cut[j])
        buckets.append(order[ends[i] : ends[j]])
        j = i
    return buckets[::-1]


def encode_bucketed(encoder: Encoder, histories: Sequence[np.ndarray]) -> np.ndarray:
    """``encoder.encode(histories)``, one run per bucket of similar lengths (``length_buckets``)."""
    reach = max(encoder.max_len, 1)
    buckets = length_buckets([min(len(h), reach) for h in histories])
    if len(buckets) <= 1:
        return encoder.encode(histories)
    parts = [encoder.encode([histories[r] for r in rows]) for rows in buckets]
    out = np.empty((len(histories), parts[0].shape[1]), dtype=parts[0].dtype)
    for rows, part in zip(buckets, parts, strict=True):
        out[rows] = part
    return out
