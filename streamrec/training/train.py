"""Training loop of the sequence encoder (torch, CPU).

* Loss: full softmax cross-entropy over the catalogue at every position (Klenitskiy & Vasilev
  2023, "SASRec with CE"); for catalogues larger than ``full_softmax_max_items`` a sampled
  softmax with ``sampled_negatives`` uniform negatives shared by the batch.
* Each user contributes the latest ``max_len + 1`` events of its training sequence.
* ``holdout=0`` (production): trains on everything for a fixed number of epochs
  (``epochs``, default :data:`DEFAULT_EPOCHS`); no validation is run.
* ``holdout>=1``: each user's last ``holdout`` events are left out; validation ranks the event
  at ``seq[-holdout]`` against 100 sampled negatives after each epoch, and training stops once
  validation NDCG@10 has not improved for ``patience`` epochs (at most ``epochs``, default
  :data:`DEFAULT_MAX_EPOCHS`). The best epoch's weights are kept.
* Deterministic for a seed and thread count (seeded torch/numpy/random generators,
  ``torch.use_deterministic_algorithms``).
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812 - the usual alias
from tqdm import tqdm

from streamrec.training.data import DataError, item_catalog, read_sequences, training_sequences
from streamrec.training.evaluate import EvalCases, build_cases, evaluate_scorer
from streamrec.training.model import ModelConfig, SASRec

DEFAULT_EPOCHS = 50
DEFAULT_MAX_EPOCHS = 100


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (defaults tuned on ML-100k's validation split).

    Attributes:
        holdout: events left out at the end of each user's sequence (0 = train on all).
        epochs: fixed epoch count (holdout 0) or maximum (holdout >= 1); None = default.
        seed: seed of every random generator.
        max_len: longest history read.
        dim: vector dimension.
        blocks: transformer blocks.
        heads: attention heads.
        dropout: dropout rate.
        lr: AdamW learning rate.
        weight_decay: AdamW decoupled weight decay (not applied to biases and norms).
        batch_size: users per step.
        patience: epochs without validation improvement before stopping.
        threads: torch intra-op threads.
        full_softmax_max_items: above this catalogue size use a sampled softmax.
        sampled_negatives: negatives per batch of the sampled softmax.
        progress: show a tqdm progress bar.
    """

    holdout: int = 0
    epochs: int | None = None
    seed: int = 0
    max_len: int = 200
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.3
    lr: float = 3e-3
    weight_decay: float = 0.5
    batch_size: int = 64
    patience: int = 15
    threads: int = 1
    full_softmax_max_items: int = 50_000
    sampled_negatives: int = 2048
    progress: bool = True


@dataclass
class TrainResult:
    """A trained model and how it got there."""

    model: SASRec
    item_ids: list[str]
    config: TrainConfig
    epochs_run: int
    best_epoch: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def facts(self) -> dict[str, Any]:
        """JSON-able summary for ``meta.json``."""
        best = next((h for h in self.history if h["epoch"] == self.best_epoch), {})
        return {
            "train_config": asdict(self.config),
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "train_seconds": round(self.seconds, 2),
            "valid": {k: v for k, v in best.items() if k.startswith(("hr", "ndcg"))},
            "curve": [
                {k: round(v, 5) for k, v in h.items() if k in ("epoch", "loss", "ndcg@10")}
                for h in self.history
            ],
        }


def seed_everything(seed: int, threads: int) -> None:
    """Seed torch, numpy and random; fix the thread count; prefer deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True)


def _windows(train: dict[str, list[str]], index: dict[str, int], max_len: int) -> list[np.ndarray]:
    out = []
    for seq in train.values():
        if len(seq) >= 2:
            out.append(np.array([index[i] for i in seq[-(max_len + 1) :]], dtype=np.int64))
    return out


def _batches(lengths: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of similar length (less padding), random within a length, in random order."""
    order = rng.permutation(len(lengths))
    order = order[np.argsort(lengths[order], kind="stable")]
    batches = [order[start : start + size] for start in range(0, len(order), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _pad_left(rows: Sequence[np.ndarray], width: int) -> torch.Tensor:
    batch = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        row = row[-width:]
        batch[i, width - len(row) :] = row
    return torch.from_numpy(batch)


def _loss(model: SASRec, windows: list[np.ndarray], config: TrainConfig) -> torch.Tensor:
    width = max(len(w) for w in windows)
    ids = _pad_left(windows, width)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    hidden = model(inputs)
    real = targets > 0
    h, y = hidden[real], targets[real] - 1  # y: 0-based item rows
    table = model.item_vectors()
    if table.shape[0] <= config.full_softmax_max_items:
        return F.cross_entropy(h @ table.T, y)
    negs = torch.randint(0, table.shape[0], (config.sampled_negatives,))
    pos_logit = (h * table[y]).sum(-1, keepdim=True)
    neg_logits = h @ table[negs].T
    neg_logits = neg_logits.masked_fill(negs.unsqueeze(0) == y.unsqueeze(1), float("-inf"))
    logits = torch.cat([pos_logit, neg_logits], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(y))


def _torch_scorer(model: SASRec, index: dict[str, int], max_len: int) -> Any:
    def score(histories: Sequence[Sequence[str]]) -> np.ndarray:
        rows = [np.array([index[i] for i in h[-max_len:]], dtype=np.int64) for h in histories]
        out = np.empty((len(rows), model.config.num_items), dtype=np.float32)
        order = np.argsort([len(r) for r in rows], kind="stable")
        for start in range(0, len(order), 64):  # similar lengths together: less padding
            chunk = order[start : start + 64]
            ids = _pad_left([rows[i] for i in chunk], max(len(rows[i]) for i in chunk))
            with torch.no_grad():
                user = model(ids)[:, -1, :]
                out[chunk] = (user @ model.item_vectors().T).numpy()
        return out

    return score


def _param_groups(model: SASRec, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        (no_decay if param.dim() < 2 or "norm" in name else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _validate(model: SASRec, cases: EvalCases, index: dict[str, int], max_len: int) -> dict:
    model.eval()
    metrics = evaluate_scorer(_torch_scorer(model, index, max_len), cases)
    model.train()
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def train(sequences: dict[str, list[str]], config: TrainConfig) -> TrainResult:
    """Train an encoder on per-user sequences (oldest first).

    torch's thread count and deterministic-algorithms flag are set for the run and restored
    afterwards.

    Args:
        sequences: full per-user sequences; the last ``config.holdout`` events are left out.
        config: hyper-parameters.

    Returns:
        The trained model (best validation epoch when ``holdout >= 1``) and its history.

    Raises:
        DataError: no user has two training events.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        return _train(sequences, config)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(sequences: dict[str, list[str]], config: TrainConfig) -> TrainResult:
    seed_everything(config.seed, config.threads)
    started = time.perf_counter()
    item_ids = item_catalog(sequences)
    index = {item: i + 1 for i, item in enumerate(item_ids)}  # 0 is padding
    windows = _windows(training_sequences(sequences, config.holdout), index, config.max_len)
    if not windows:
        raise DataError("no user has two training events; nothing to learn")
    model = SASRec(
        ModelConfig(
            num_items=len(item_ids),
            dim=config.dim,
            max_len=config.max_len,
            blocks=config.blocks,
            heads=config.heads,
            dropout=config.dropout,
        )
    )
    optimizer = torch.optim.AdamW(
        _param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98)
    )
    validating = config.holdout >= 1
    cases = (
        build_cases(sequences, config.holdout, 100, config.seed, item_ids) if validating else None
    )
    validating = validating and cases is not None and len(cases.users) > 0
    epochs = config.epochs or (DEFAULT_MAX_EPOCHS if validating else DEFAULT_EPOCHS)
    rng = np.random.default_rng(config.seed)
    lengths = np.array([len(w) for w in windows])
    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    bar = tqdm(range(1, epochs + 1), desc="train", unit="epoch", disable=not config.progress)
    model.train()
    for epoch in bar:
        total, steps = 0.0, 0
        for batch in _batches(lengths, config.batch_size, rng):
            loss = _loss(model, [windows[i] for i in batch], config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        record = {"epoch": float(epoch), "loss": total / steps}
        if validating and cases is not None:
            record.update(_validate(model, cases, index, config.max_len))
            if record["ndcg@10"] > best_score:
                best_score, best_epoch = record["ndcg@10"], epoch
                best_state = copy.deepcopy(model.state_dict())
        history.append(record)
        bar.set_postfix(
            {k: f"{v:.4f}" for k, v in record.items() if k in ("loss", "ndcg@10", "hr@10")}
            | ({"best": best_epoch} if validating else {})
        )
        if validating and epoch - best_epoch >= config.patience:
            break
    bar.close()
    if validating:
        model.load_state_dict(best_state)
    else:
        best_epoch = len(history)
    model.eval()
    return TrainResult(
        model=model,
        item_ids=item_ids,
        config=config,
        epochs_run=len(history),
        best_epoch=best_epoch,
        seconds=time.perf_counter() - started,
        history=history,
    )


def train_file(
    data: str | Path,
    out: str | Path,
    config: TrainConfig,
    int8: bool = False,
    repository: bool = False,
) -> dict[str, Any]:
    """Read ``data``, train, export to ``out`` (with the parity check) and summarise.

    Args:
        data: the interactions file.
        out: the model directory to write, or with ``repository`` a model repository: the
            model is written as its next numbered version (``ranking/repository.py``), its
            manifest last, so a worker following the repository serves it once complete.
        config: training settings.
        int8: also write ``encoder.int8.onnx``.
        repository: ``out`` is a model repository.

    Returns:
        JSON-able summary: ``version``, ``out``, ``items``, ``users`` and the training facts
        (and ``repository_version`` with ``repository``).

    Raises:
        DataError: the data file is unreadable or malformed.
        ModelError: the ONNX export failed its parity check.
    """
    from streamrec.ranking.repository import claim_next_version
    from streamrec.training.export import export_model_dir

    sequences = read_sequences(data)
    result = train(sequences, config)
    facts = {"data": str(data), **result.facts()}
    number = None
    if repository:  # claimed only now: a failed training leaves no empty version behind
        number, out = claim_next_version(out)
    meta = export_model_dir(result.model, result.item_ids, out, extra=facts, int8=int8)
    extra = {} if number is None else {"repository_version": number}
    return {
        "version": meta.version,
        "out": str(out),
        "items": meta.num_items,
        "users": len(sequences),
        **extra,
        **{k: v for k, v in facts.items() if k not in ("train_config", "curve")},
    }
