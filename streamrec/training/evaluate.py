"""Leave-one-out evaluation of next-item scorers (torch-free).

Protocol (the SASRec paper's, made explicit):

* Each user's events are ordered by time (:mod:`streamrec.training.data`). Users with fewer
  than 3 events are skipped. ``valid``: the target is the second-last event and the history is
  everything before it. ``test``: the target is the last event and the history includes the
  validation event.
* ``negatives=100``: the target is ranked among 100 items drawn uniformly, without replacement,
  from the items the user never interacted with (fewer if the catalogue is too small). The draw
  depends only on ``seed`` and the data, so every scorer sees the same candidates.
* ``negatives=None`` ("all"): the target is ranked against every catalogue item except the
  user's other history items.
* Ties are resolved by expected rank under a random tie-break (:mod:`.metrics`).

A scorer (:data:`streamrec.training.metrics.Scorer`, also importable from here) maps a batch of
histories to scores over the whole catalogue, float [B, num_items], columns in catalogue order
(:func:`streamrec.training.data.item_catalog`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamrec.training.baselines import cooc_scorer, popularity_scorer
from streamrec.training.data import (
    holdout_cases,
    item_catalog,
    leave_one_out,
    read_sequences,
    training_sequences,
)
from streamrec.training.metrics import DEFAULT_KS, Scorer, rank_metrics

TIES_RULE = "expected rank under random tie-break"


@dataclass(frozen=True)
class EvalCases:
    """Held-out targets with their candidate sets.

    Attributes:
        catalog: item ids; scorers' columns follow this order.
        users: user id per case.
        histories: history per case, oldest first.
        targets: catalogue index of the target per case.
        candidates: per case, catalogue indices to rank (target included), or None for the
            full-catalogue protocol (then ``excluded`` applies).
        excluded: per case, catalogue indices of the user's other history items.
        protocol: a description of how the cases were built (goes into reports).
    """

    catalog: list[str]
    users: list[str]
    histories: list[list[str]]
    targets: np.ndarray
    candidates: list[np.ndarray] | None
    excluded: list[np.ndarray]
    protocol: dict[str, Any] = field(default_factory=dict)


def _sample_negatives(
    rng: np.random.Generator, num_items: int, seen: np.ndarray, count: int
) -> np.ndarray:
    available = num_items - len(seen)
    if available <= count:
        return np.setdiff1d(np.arange(num_items), seen)
    chosen: list[int] = []
    taken = set(seen.tolist())
    while len(chosen) < count:
        for item in rng.integers(0, num_items, size=2 * (count - len(chosen))).tolist():
            if item not in taken:
                taken.add(item)
                chosen.append(item)
                if len(chosen) == count:
                    break
    return np.array(chosen, dtype=np.int64)


def build_cases(
    sequences: dict[str, list[str]],
    cut: int,
    negatives: int | None = 100,
    seed: int = 0,
    catalog: list[str] | None = None,
) -> EvalCases:
    """Build the cases of the protocol in the module docstring.

    Args:
        sequences: full per-user sequences.
        cut: 1 for the test split, 2 for the validation split.
        negatives: sampled negatives per case, or None to rank against the whole catalogue.
        seed: seed of the negative sampling.
        catalog: item order; defaults to :func:`item_catalog` of ``sequences``.
    """
    catalog = catalog if catalog is not None else item_catalog(sequences)
    index = {item: i for i, item in enumerate(catalog)}
    rng = np.random.default_rng(seed)
    users, histories, targets, candidates, excluded = [], [], [], [], []
    for user, history, target in holdout_cases(sequences, cut):
        t = index[target]
        hist = np.unique([index[i] for i in history])
        excluded.append(hist[hist != t])
        if negatives is not None:
            seen = np.unique([index[i] for i in sequences[user]])
            negs = _sample_negatives(rng, len(catalog), seen, negatives)
            candidates.append(np.concatenate([[t], negs]).astype(np.int64))
        users.append(user)
        histories.append(history)
        targets.append(t)
    protocol = {
        "split": "test" if cut == 1 else "valid" if cut == 2 else f"holdout-{cut}",
        "negatives": "all" if negatives is None else negatives,
        "seed": seed,
        "min_events": 3,
        "ties": TIES_RULE,
    }
    return EvalCases(
        catalog=catalog,
        users=users,
        histories=histories,
        targets=np.array(targets, dtype=np.int64),
        candidates=candidates if negatives is not None else None,
        excluded=excluded,
        protocol=protocol,
    )


def subset_cases(cases: EvalCases, users: int, seed: int) -> EvalCases:
    """A fixed random sample of ``users`` cases (``cases`` itself when it has no more)."""
    if len(cases.users) <= users:
        return cases
    keep = np.sort(np.random.default_rng(seed).choice(len(cases.users), users, replace=False))
    return EvalCases(
        catalog=cases.catalog,
        users=[cases.users[i] for i in keep],
        histories=[cases.histories[i] for i in keep],
        targets=cases.targets[keep],
        candidates=None if cases.candidates is None else [cases.candidates[i] for i in keep],
        excluded=[cases.excluded[i] for i in keep],
        protocol={**cases.protocol, "sampled_users": users},
    )


def _counts(row: np.ndarray, case: int, cases: EvalCases) -> tuple[int, int]:
    target = int(cases.targets[case])
    own = row[target]
    if np.isnan(own):
        return len(row) - 1, 0
    if cases.candidates is not None:
        values = row[cases.candidates[case][1:]]
    else:
        keep = np.ones(len(row), dtype=bool)
        keep[cases.excluded[case]] = False
        keep[target] = False
        values = row[keep]
    values = np.nan_to_num(values, nan=-np.inf)
    return int(np.count_nonzero(values > own)), int(np.count_nonzero(values == own))


def evaluate_scorer(
    scorer: Scorer,
    cases: EvalCases,
    batch_size: int = 256,
    ks: tuple[int, ...] = DEFAULT_KS,
) -> dict[str, Any]:
    """HR@k, NDCG@k and MRR of ``scorer`` on ``cases``, plus ``users`` and ``protocol``."""
    greater = np.zeros(len(cases.users), dtype=np.int64)
    ties = np.zeros(len(cases.users), dtype=np.int64)
    for start in range(0, len(cases.users), batch_size):
        scores = np.asarray(scorer(cases.histories[start : start + batch_size]))
        if scores.shape[1] != len(cases.catalog):
            raise ValueError(f"scorer returned {scores.shape[1]} columns for {len(cases.catalog)}")
        for offset, row in enumerate(scores):
            greater[start + offset], ties[start + offset] = _counts(row, start + offset, cases)
    result: dict[str, Any] = dict(rank_metrics(greater, ties, ks))
    result["users"] = len(cases.users)
    result["protocol"] = dict(cases.protocol)
    return result


def model_scorer(model: Any, catalog: list[str]) -> Scorer:
    """A scorer over ``catalog`` from an :class:`~streamrec.training.offline.OfflineModel`.

    Catalogue items the model does not know score ``-inf``.
    """
    rows = np.array([model.index.get(item, -1) for item in catalog], dtype=np.int64)
    known = rows >= 0
    vectors = np.zeros((len(catalog), model.meta.dim), dtype=np.float32)
    vectors[known] = model.item_vectors[rows[known]]

    def score(histories: Sequence[Sequence[str]]) -> np.ndarray:
        scores = model.user_vectors(histories) @ vectors.T
        scores[:, ~known] = -np.inf
        return np.asarray(scores)

    return score


def evaluate_file(
    data: str,
    split: str = "test",
    negatives: int | None = 100,
    seed: int = 0,
    baseline: str = "model",
    model_dir: str | None = None,
    int8: bool = False,
) -> dict[str, Any]:
    """Evaluate the model in ``model_dir`` or a baseline on the interactions in ``data``.

    Baselines are fit on the training portion (each user's last two events left out), the
    same portion ``streamrec train --holdout 2`` trains on.

    Raises:
        DataError: the data file is unreadable or malformed.
        ModelError: the model directory is missing or broken.
        ValueError: unknown split or baseline.
    """
    sequences = read_sequences(data)
    leave_one_out(sequences, split)  # validates the split name
    cases = build_cases(sequences, 2 if split == "valid" else 1, negatives, seed)
    train = training_sequences(sequences, 2)
    scorer: Scorer
    if baseline == "popular":
        scorer = popularity_scorer(train, cases.catalog)
    elif baseline == "cooc":
        scorer = cooc_scorer(train, cases.catalog)
    elif baseline == "model":
        from streamrec.training.offline import load_model

        if model_dir is None:
            raise ValueError("model_dir is required to evaluate a model")
        model = load_model(model_dir, int8=int8)
        scorer = model_scorer(model, cases.catalog)
    else:
        raise ValueError(f"unknown baseline {baseline!r}")
    result = evaluate_scorer(scorer, cases)
    result["protocol"]["scorer"] = baseline
    if baseline == "model":
        result["protocol"]["model_version"] = model.meta.version
    return result
