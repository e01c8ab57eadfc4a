"""Training loop of the sequence encoder (torch, CPU).

* Loss (:mod:`streamrec.training.loss`): full softmax cross-entropy over the catalogue at every
  position (Klenitskiy & Vasilev 2023, "SASRec with CE") up to ``full_softmax_max_items`` items;
  above, a sampled softmax over ``sampled_negatives`` negatives shared by the batch, drawn by
  frequency ** ``negative_alpha`` with the log-q correction.
* Each user contributes the latest ``max_len + 1`` events of its training sequence.
* ``holdout=0`` (production): trains on everything for a fixed number of epochs
  (``epochs``, default :data:`DEFAULT_EPOCHS`); no validation is run.
* ``holdout>=1``: each user's last ``holdout`` events are left out; validation ranks the event
  at ``seq[-holdout]`` against 100 sampled negatives after each epoch, and training stops once
  validation NDCG@10 has not improved for ``patience`` epochs, or ``patience_steps`` optimizer
  steps rounded up to whole epochs (at least 2) when that is fewer (at most ``epochs``, default
  :data:`DEFAULT_MAX_EPOCHS`). The best epoch's weights are kept. Each epoch validates on a
  fixed random sample of ``valid_users`` users (all of them when there are fewer); the best
  weights are then validated on every user once (``valid`` in the facts).
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
from tqdm import tqdm

from streamrec.training.data import DataError, item_catalog, read_sequences, training_sequences
from streamrec.training.evaluate import EvalCases, build_cases, evaluate_scorer, subset_cases
from streamrec.training.loss import (
    LossPlan,
    NegativeSampler,
    full_softmax,
    resolve_loss,
    sampled_softmax,
)
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
        patience_steps: the same bound in optimizer steps, for data sets whose epoch is many
            steps (ML-100k: 15 steps an epoch, so 225 steps = its 15 epochs).
        threads: torch intra-op threads.
        loss: "full", "sampled", or "auto" (full up to ``full_softmax_max_items`` items).
        full_softmax_max_items: above this catalogue size "auto" uses a sampled softmax.
        sampled_negatives: negatives per batch of the sampled softmax (shared by its positions).
        negative_alpha: negatives drawn by training frequency ** alpha (0 = uniform).
        valid_users: users validated after each epoch (a fixed sample; all at the end).
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
    patience_steps: int = 225
    threads: int = 1
    loss: str = "auto"
    full_softmax_max_items: int = 10_000
    sampled_negatives: int = 1024
    negative_alpha: float = 0.0
    valid_users: int = 2000
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
    loss: LossPlan = field(default_factory=lambda: LossPlan("full", 0))
    valid: dict[str, float] = field(default_factory=dict)  # best weights, every user

    def facts(self) -> dict[str, Any]:
        """JSON-able summary for ``meta.json``."""
        best = next((h for h in self.history if h["epoch"] == self.best_epoch), {})
        return {
            "train_config": asdict(self.config),
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "train_seconds": round(self.seconds, 2),
            "loss": {"kind": self.loss.kind, "negatives": self.loss.negatives},
            "valid": self.valid or {k: v for k, v in best.items() if k.startswith(("hr", "ndcg"))},
            "curve": [
                {
                    k: round(v, 5)
                    for k, v in h.items()
                    if k in ("epoch", "loss", "ndcg@10", "seconds")
                }
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


def _loss(
    model: SASRec, windows: list[np.ndarray], plan: LossPlan, sampler: NegativeSampler | None
) -> torch.Tensor:
    width = max(len(w) for w in windows)
    ids = _pad_left(windows, width)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    hidden = model(inputs)
    real = targets > 0
    h, y = hidden[real], targets[real] - 1  # y: 0-based item rows
    if plan.kind == "full" or sampler is None:
        return full_softmax(h, y, model.item_vectors())
    return sampled_softmax(h, y, model.rows, sampler.draw(plan.negatives), sampler)


def _item_counts(windows: list[np.ndarray], num_items: int) -> np.ndarray:
    """Training occurrences per 0-based item row (targets only: what the loss predicts)."""
    counts = np.zeros(num_items + 1, dtype=np.int64)
    for w in windows:
        np.add.at(counts, w[1:], 1)
    return counts[1:]


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


def _param_groups(
    model: SASRec, weight_decay: float, skip: tuple[torch.Tensor, ...] = ()
) -> list[dict[str, Any]]:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if any(param is s for s in skip):
            continue
        (no_decay if param.dim() < 2 or "norm" in name else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _optimizers(model: SASRec, config: TrainConfig, sparse: bool) -> list[torch.optim.Optimizer]:
    """AdamW (decoupled weight decay, not on biases and norms); with a sparse item table, the
    table's touched rows are updated by SparseAdam instead (no weight decay on it): a dense
    AdamW step would read and write every row of a 1,000,000-item table at every step."""
    betas = (0.9, 0.98)
    if not sparse:
        return [
            torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr, betas=betas)
        ]
    table = model.item_emb.weight
    groups = _param_groups(model, config.weight_decay, (table,))
    dense = torch.optim.AdamW(groups, lr=config.lr, betas=betas)
    return [dense, torch.optim.SparseAdam([table], lr=config.lr, betas=betas)]


def _validate(model: SASRec, cases: EvalCases, index: dict[str, int], max_len: int) -> dict:
    model.eval()
    metrics = evaluate_scorer(_torch_scorer(model, index, max_len), cases)
    model.train()
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def train(
    sequences: dict[str, list[str]], config: TrainConfig, catalog: Sequence[str] = ()
) -> TrainResult:
    """Train an encoder on per-user sequences (oldest first).

    torch's thread count and deterministic-algorithms flag are set for the run and restored
    afterwards.

    Args:
        sequences: full per-user sequences; the last ``config.holdout`` events are left out.
        config: hyper-parameters.
        catalog: item ids to embed besides those in ``sequences`` (a shop's catalog holds
            items nobody interacted with yet; they cost table rows and sampled negatives).

    Returns:
        The trained model (best validation epoch when ``holdout >= 1``) and its history.

    Raises:
        DataError: no user has two training events.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        return _train(sequences, config, catalog)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(
    sequences: dict[str, list[str]], config: TrainConfig, catalog: Sequence[str]
) -> TrainResult:
    seed_everything(config.seed, config.threads)
    started = time.perf_counter()
    item_ids = list(dict.fromkeys([*item_catalog(sequences), *catalog]))
    index = {item: i + 1 for i, item in enumerate(item_ids)}  # 0 is padding
    windows = _windows(training_sequences(sequences, config.holdout), index, config.max_len)
    if not windows:
        raise DataError("no user has two training events; nothing to learn")
    plan = resolve_loss(
        config.loss, len(item_ids), config.full_softmax_max_items, config.sampled_negatives
    )
    model = SASRec(
        ModelConfig(
            num_items=len(item_ids),
            dim=config.dim,
            max_len=config.max_len,
            blocks=config.blocks,
            heads=config.heads,
            dropout=config.dropout,
        ),
        sparse=plan.kind == "sampled",
    )
    optimizers = _optimizers(model, config, sparse=plan.kind == "sampled")
    sampler = None
    if plan.kind == "sampled":
        generator = torch.Generator().manual_seed(config.seed)
        counts = _item_counts(windows, len(item_ids))
        sampler = NegativeSampler(counts, config.negative_alpha, generator)
    validating = config.holdout >= 1
    cases = (
        build_cases(sequences, config.holdout, 100, config.seed, item_ids) if validating else None
    )
    validating = validating and cases is not None and len(cases.users) > 0
    epoch_cases = (
        subset_cases(cases, config.valid_users, config.seed) if validating and cases else None
    )
    epochs = config.epochs or (DEFAULT_MAX_EPOCHS if validating else DEFAULT_EPOCHS)
    rng = np.random.default_rng(config.seed)
    lengths = np.array([len(w) for w in windows])
    steps_per_epoch = -(-len(windows) // config.batch_size)
    patience = min(config.patience, max(2, -(-config.patience_steps // steps_per_epoch)))
    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    bar = tqdm(range(1, epochs + 1), desc="train", unit="epoch", disable=not config.progress)
    model.train()
    for epoch in bar:
        total, steps, epoch_start = 0.0, 0, time.perf_counter()
        for batch in _batches(lengths, config.batch_size, rng):
            loss = _loss(model, [windows[i] for i in batch], plan, sampler)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
            total, steps = total + loss.item(), steps + 1
        record = {
            "epoch": float(epoch),
            "loss": total / steps,
            "seconds": time.perf_counter() - epoch_start,
        }
        if validating and epoch_cases is not None:
            record.update(_validate(model, epoch_cases, index, config.max_len))
            if record["ndcg@10"] > best_score:
                best_score, best_epoch = record["ndcg@10"], epoch
                best_state = copy.deepcopy(model.state_dict())
        history.append(record)
        bar.set_postfix(
            {k: f"{v:.4f}" for k, v in record.items() if k in ("loss", "ndcg@10", "hr@10")}
            | ({"best": best_epoch} if validating else {})
        )
        if validating and epoch - best_epoch >= patience:
            break
    bar.close()
    valid: dict[str, float] = {}
    if validating and cases is not None:
        model.load_state_dict(best_state)
        if epoch_cases is not cases:  # the sample was smaller: every user once, at the end
            full = _validate(model, cases, index, config.max_len)
            valid = {k: v for k, v in full.items() if k.startswith(("hr", "ndcg"))}
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
        loss=plan,
        valid=valid,
    )


def train_file(
    data: str | Path,
    out: str | Path,
    config: TrainConfig,
    int8: bool = False,
    repository: bool = False,
    catalog: Sequence[str] = (),
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
        catalog: item ids to embed besides those in ``data`` (see :func:`train`).

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
    result = train(sequences, config, catalog)
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
