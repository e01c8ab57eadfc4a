"""Offline use of a trained model directory with onnxruntime only (no torch).

>>> model = load_model("model/")                          # doctest: +SKIP
>>> model.recommend(["item-1", "item-7"], k=5)             # doctest: +SKIP
[("item-9", 7.31), ...]

Rules, the same for every method:

* History ids unknown to the model are skipped; only the latest ``max_len`` known items are
  read. A history with no known item raises :class:`~streamrec.errors.ModelError` in
  :meth:`OfflineModel.score` and :meth:`OfflineModel.recommend` (there is nothing to encode);
  :meth:`OfflineModel.user_vectors` returns a zero vector for it instead (every score 0).
* Unknown candidate ids score ``-inf`` (they sort last; no error).
* :meth:`OfflineModel.recommend` ranks the whole catalogue and, by default, does **not**
  exclude items already in the history (re-consumption is common in event streams); pass
  ``exclude_history=True`` to drop them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from streamrec.errors import ModelError
from streamrec.ranking.modelfiles import (
    INPUT_HISTORY,
    INPUT_MASK,
    OUTPUT_USER,
    ModelFiles,
    ModelMeta,
    read_model_dir,
)

_BATCH = 256


class OfflineModel:
    """A loaded model: the encoder session plus the item table."""

    def __init__(self, files: ModelFiles, session: object) -> None:
        """Wrap a model directory and an onnxruntime ``InferenceSession`` over its encoder."""
        self.files = files
        self.session = session
        self.index = {item: row for row, item in enumerate(files.item_ids)}

    @property
    def meta(self) -> ModelMeta:
        """The model's metadata (version, dim, max_len, training facts)."""
        return self.files.meta

    @property
    def item_ids(self) -> list[str]:
        """Item ids, row order of :attr:`item_vectors`."""
        return self.files.item_ids

    @property
    def item_vectors(self) -> np.ndarray:
        """float32 [num_items, dim]."""
        return self.files.item_vectors

    def _rows(self, history: Sequence[str]) -> list[int]:
        rows = [self.index[item] for item in history if item in self.index]
        return rows[-self.meta.max_len :]

    def user_vectors(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """User vectors float32 [len(histories), dim], one per history (oldest item first)."""
        dim = self.meta.dim
        out = np.zeros((len(histories), dim), dtype=np.float32)
        rows = [self._rows(h) for h in histories]
        todo = [i for i, r in enumerate(rows) if r]
        for start in range(0, len(todo), _BATCH):
            chunk = todo[start : start + _BATCH]
            width = max(len(rows[i]) for i in chunk)
            history = np.zeros((len(chunk), width, dim), dtype=np.float32)
            mask = np.zeros((len(chunk), width), dtype=np.float32)
            for j, i in enumerate(chunk):
                r = rows[i]
                history[j, width - len(r) :] = self.item_vectors[r]
                mask[j, width - len(r) :] = 1.0
            feeds = {INPUT_HISTORY: history, INPUT_MASK: mask}
            (user,) = self.session.run([OUTPUT_USER], feeds)  # type: ignore[attr-defined]
            out[chunk] = user
        return out

    def _user(self, history: Sequence[str]) -> np.ndarray:
        if not self._rows(history):
            raise ModelError("history has no item known to the model")
        user: np.ndarray = self.user_vectors([history])[0]
        return user

    def score(self, history: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """Scores (higher is better) of ``candidates`` for a user with this ``history``.

        Returns:
            float32 [len(candidates)]; unknown candidates get ``-inf``.

        Raises:
            ModelError: no item of ``history`` is known to the model.
        """
        user = self._user(history)
        rows = np.array([self.index.get(c, -1) for c in candidates], dtype=np.int64)
        known = rows >= 0
        scores = np.full(len(candidates), -np.inf, dtype=np.float32)
        scores[known] = self.item_vectors[rows[known]] @ user
        return scores

    def recommend(
        self, history: Sequence[str], k: int, exclude_history: bool = False
    ) -> list[tuple[str, float]]:
        """The ``k`` best items with their scores, best first (ties by catalogue order).

        Raises:
            ModelError: ``k`` < 0 or no item of ``history`` is known to the model.
        """
        if k < 0:
            raise ModelError(f"k must be >= 0, got {k}")
        scores = self.item_vectors @ self._user(history)
        if exclude_history:
            seen = [self.index[item] for item in history if item in self.index]
            scores[seen] = -np.inf
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.item_ids[i], float(scores[i])) for i in order if np.isfinite(scores[i])]


def load_model(path: str | Path, int8: bool = False, threads: int = 1) -> OfflineModel:
    """Load a model directory written by ``streamrec train``.

    Args:
        path: the model directory.
        int8: use ``encoder.int8.onnx`` (written by ``streamrec train --int8``).
        threads: onnxruntime intra-op threads.

    Raises:
        ModelError: the directory is incomplete or the encoder fails to load.
    """
    import onnxruntime as ort  # deferred: importing this module stays cheap

    files = read_model_dir(path)
    encoder = files.encoder_path(int8=int8)
    if not encoder.is_file():
        raise ModelError(f"{encoder} is missing (train with --int8 to write it)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(
            str(encoder), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"cannot load {encoder}: {exc}") from exc
    return OfflineModel(files, session)
