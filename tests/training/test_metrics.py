"""Ranking metrics and the evaluation protocol on hand-computed cases."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from streamrec.training.baselines import cooc_scorer, popularity_scorer
from streamrec.training.evaluate import build_cases, evaluate_scorer
from streamrec.training.metrics import rank_metrics, target_rank_counts


def test_single_cases_by_hand() -> None:
    first = rank_metrics(np.array([0]), np.array([0]))
    assert first == {"hr@10": 1.0, "ndcg@10": 1.0, "hr@20": 1.0, "ndcg@20": 1.0, "mrr": 1.0}
    fourth = rank_metrics(np.array([3]), np.array([0]))
    assert fourth["hr@10"] == 1.0
    assert fourth["ndcg@10"] == pytest.approx(1 / math.log2(5))
    assert fourth["mrr"] == pytest.approx(0.25)
    thirteenth = rank_metrics(np.array([12]), np.array([0]))
    assert thirteenth["hr@10"] == 0.0 and thirteenth["ndcg@10"] == 0.0
    assert thirteenth["hr@20"] == 1.0
    assert thirteenth["ndcg@20"] == pytest.approx(1 / math.log2(14))
    assert thirteenth["mrr"] == pytest.approx(1 / 13)


def test_ties_count_as_expected_rank() -> None:
    # 9 above and 1 tie: rank 9 or 10 (0-based) with probability 1/2 each.
    tied = rank_metrics(np.array([9]), np.array([1]))
    assert tied["hr@10"] == pytest.approx(0.5)
    assert tied["ndcg@10"] == pytest.approx(0.5 / math.log2(11))
    assert tied["mrr"] == pytest.approx((1 / 10 + 1 / 11) / 2)
    # A constant scorer over 100 candidates is at chance, not perfect.
    constant = rank_metrics(np.array([0]), np.array([99]))
    assert constant["hr@10"] == pytest.approx(0.1)
    assert constant["mrr"] == pytest.approx(sum(1 / r for r in range(1, 101)) / 100)


def test_means_over_cases_and_empty() -> None:
    both = rank_metrics(np.array([0, 12]), np.array([0, 0]))
    assert both["hr@10"] == pytest.approx(0.5)
    assert both["mrr"] == pytest.approx((1 + 1 / 13) / 2)
    assert rank_metrics(np.array([], dtype=int), np.array([], dtype=int))["ndcg@10"] == 0.0
    with pytest.raises(ValueError):
        rank_metrics(np.array([-1]), np.array([0]))


def test_target_rank_counts() -> None:
    assert target_rank_counts(np.array([0.5, 0.9, 0.5, 0.1]), 0) == (1, 1)
    assert target_rank_counts(np.array([np.nan, 0.9, 0.5]), 0) == (2, 0)
    assert target_rank_counts(np.array([0.2, np.nan, 0.1]), 0) == (0, 0)


SEQS = {
    "a": ["i1", "i2", "i3", "i4"],
    "b": ["i2", "i3", "i5"],
    "c": ["i1", "i5"],  # too short: skipped
}


def _fixed(scores: Sequence[float]):  # type: ignore[no-untyped-def]
    def score(histories: Sequence[Sequence[str]]) -> np.ndarray:
        return np.tile(np.array(scores, dtype=np.float64), (len(histories), 1))

    return score


def test_full_ranking_excludes_other_history_items() -> None:
    cases = build_cases(SEQS, cut=1, negatives=None)
    assert cases.catalog == ["i1", "i2", "i3", "i4", "i5"]
    assert cases.users == ["a", "b"]
    # a: target i4, history i1 i2 i3 excluded, competes only with i5.
    # b: target i5, history i2 i3 excluded, competes with i1 and i4.
    result = evaluate_scorer(_fixed([5.0, 4.0, 3.0, 2.0, 1.0]), cases)
    assert result["users"] == 2
    assert result["mrr"] == pytest.approx((1 / 1 + 1 / 3) / 2)
    assert result["protocol"]["negatives"] == "all"


def test_sampled_negatives_never_interacted_and_seeded() -> None:
    seqs = {f"u{u}": [f"i{(u + j) % 300}" for j in range(5)] for u in range(300)}
    cases = build_cases(seqs, cut=2, negatives=100, seed=3)
    again = build_cases(seqs, cut=2, negatives=100, seed=3)
    assert cases.candidates is not None and again.candidates is not None
    index = {item: i for i, item in enumerate(cases.catalog)}
    for user, cands, other in zip(cases.users, cases.candidates, again.candidates, strict=True):
        seen = {index[i] for i in seqs[user]}
        assert len(cands) == 101 and len(set(cands.tolist())) == 101
        assert cands[0] == index[seqs[user][-2]]
        assert not seen & set(cands[1:].tolist())
        assert np.array_equal(cands, other)


def test_baselines_on_a_hand_made_sequence() -> None:
    train = {"a": ["x", "y", "z"], "b": ["x", "y"], "c": ["w"]}
    catalog = ["w", "x", "y", "z"]
    pop = popularity_scorer(train, catalog)([["w"]])[0]
    assert pop.tolist() == [1.0, 2.0, 2.0, 1.0]
    cooc = cooc_scorer(train, catalog, window=1)([["x"], ["q"]])
    assert np.argmax(cooc[0]) == 2  # y follows x twice
    assert cooc[0][2] == pytest.approx(2.0, abs=1e-2)
    assert np.argsort(-cooc[1]).tolist()[:2] == [1, 2]  # unknown history -> popularity order
