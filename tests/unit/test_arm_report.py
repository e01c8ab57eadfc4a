"""The per-arm replay report: intervals over users, arm metrics, OPE of one arm from another."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from streamrec.core.events import Event
from streamrec.evaluation.arms import (
    ArmRecorder,
    arm_report,
    arms_table,
    greedy_pairs,
    list_metrics,
    ope_comparison,
    ope_table,
)
from streamrec.evaluation.intervals import cluster_bootstrap, coverage_interval, ratio
from streamrec.evaluation.ope import (
    LoggedList,
    LoggedSlot,
    by_arm,
    estimate,
    estimate_with_ci,
    greedy_target,
    read_log,
)
from streamrec.ops.settings import load_settings
from streamrec.ranking.explore import ShownItem, epsilon_slots, request_rng
from streamrec.ranking.fusion import Fused


def test_cluster_bootstrap_covers_a_known_mean_with_the_textbook_width() -> None:
    rng = np.random.default_rng(1)
    hits = (rng.random(2000) < 0.3).astype(float)
    rows = np.stack([np.ones_like(hits), hits], axis=1)  # one event per user
    value, low, high = cluster_bootstrap(rows, ratio(1, 0), n_boot=2000, seed=3)
    assert value == pytest.approx(hits.mean())
    assert low < 0.3 < high
    textbook = 2 * 1.96 * math.sqrt(value * (1 - value) / len(hits))
    assert high - low == pytest.approx(textbook, rel=0.15)
    assert cluster_bootstrap(rows, ratio(1, 0), n_boot=2000, seed=3) == (value, low, high)


def test_cluster_bootstrap_resamples_users_not_events() -> None:
    """Users whose events all agree: the interval is as wide as for one event per user,
    far wider than treating the 20x more events as independent would give."""
    rng = np.random.default_rng(2)
    user_hit = (rng.random(300) < 0.5).astype(float)
    per_user = np.stack([np.full(300, 20.0), 20.0 * user_hit], axis=1)
    one_each = np.stack([np.ones(300), user_hit], axis=1)
    _, low, high = cluster_bootstrap(per_user, ratio(1, 0), seed=0)
    _, low1, high1 = cluster_bootstrap(one_each, ratio(1, 0), seed=0)
    assert high - low == pytest.approx(high1 - low1, rel=1e-9)
    assert high - low > 2 * 2 * 1.96 * math.sqrt(0.25 / 6000)
    single = cluster_bootstrap(one_each[:1], ratio(1, 0))
    assert single[0] == single[1] == single[2]
    with pytest.raises(ValueError):
        cluster_bootstrap(one_each, ratio(1, 0), level=1.0)


def test_coverage_interval_centres_on_the_distinct_share() -> None:
    same = np.ones((50, 10))  # every user saw the same 10 items: no doubt about coverage
    assert coverage_interval(same, 20) == (0.5, 0.5, 0.5)
    own = np.eye(40)  # each user saw one item nobody else saw
    value, low, high = coverage_interval(own, 80, n_boot=500)
    assert value == 0.5
    assert low < value < high and value - low == pytest.approx(high - value)
    assert coverage_interval(own, 40, n_boot=200)[2] == 1.0  # never beyond the catalog


def _shown(items: list[str], explored: int | None = None) -> list[ShownItem]:
    return [
        ShownItem(i, 0.0, 0.5 if s == explored else 1.0, s == explored, "ann")
        for s, i in enumerate(items)
    ]


def test_recorder_scores_hits_and_ndcg_per_arm() -> None:
    recorder = ArmRecorder(lambda user: "A" if user.startswith("a") else "B")
    recorder.scored(Event("1", "a1", "y", "click", 5), _shown(["x", "y", "z"]), k=2)
    recorder.scored(Event("2", "a2", "q", "click", 6), _shown(["x", "y", "z"], 0), k=3)
    recorder.scored(Event("3", "b1", "x", "click", 7), _shown(["x", "y"]), k=2)
    recorder.listed("a1", _shown(["x", "y"]))
    recorder.listed("b1", _shown(["x", "w", "v"]))
    groups = by_arm(recorder.lists)
    assert sorted(groups) == ["A", "B"] and len(groups["A"]) == 2
    a = list_metrics(groups["A"], n_boot=200)
    assert a["events"] == 2 and a["users"] == 2
    assert a["hr@10"]["value"] == 0.5
    assert a["ndcg@10"]["value"] == pytest.approx(0.5 / math.log2(3))
    assert a["exploration_rate"] == pytest.approx(1 / 5)
    report = arm_report(recorder, catalog_size=10, n_boot=200)
    assert report["A"]["coverage"]["value"] == pytest.approx(0.2)
    assert report["B"]["coverage"]["value"] == pytest.approx(0.3)
    assert report["B"]["hr@10"]["value"] == report["B"]["ndcg@10"]["value"] == 1.0
    assert "| A | 2 | 2 | 0.5000 [" in arms_table(report)


def test_recorder_log_round_trips_through_read_log(tmp_path: Path) -> None:
    recorder = ArmRecorder(lambda user: "A")
    recorder.scored(Event("1", "u", "y", "click", 5), _shown(["x", "y"], 0), k=2)
    recorder.write_log(tmp_path / "log.jsonl")
    lists = read_log(tmp_path / "log.jsonl")  # rewards given: no events to join
    assert lists == recorder.lists


def test_greedy_pairs_match_an_exploring_arm_with_its_greedy_twin() -> None:
    def pairs(arms: str) -> list[tuple[str, str]]:
        return greedy_pairs(load_settings(ab_arms=arms, explore_rate=0.1))

    assert pairs('[{"name": "A"}, {"name": "B", "explore_rate": 0}]') == [("A", "B")]
    assert pairs('[{"name": "A", "explore_rate": 0}, {"name": "B"}]') == [("B", "A")]
    # other weights: B shows items A gave no propensity to; other demotion: other states
    assert pairs('[{"name": "A"}, {"name": "B", "explore_rate": 0, "weight_ann": 3}]') == []
    arms = '[{"name": "A"}, {"name": "B", "explore_rate": 0, "impression_demote_strength": 0}]'
    assert pairs(arms) == []


K, EPS, POOL = 5, 0.3, [Fused(f"p{i}", 0.0, "ann") for i in range(20)]
EXPLOIT = [Fused(f"e{i}", 0.0, "ann") for i in range(K)]
PREFS = {"e0": 0.2, "e1": 0.15, "e2": 0.1, "e3": 0.05, "e4": 0.05}


def _simulate(recorder: ArmRecorder, users: int, seed: int) -> None:
    """Users of arm A see epsilon-greedy lists, of arm B the exploit list; each user's next
    item is drawn from the same preferences whatever was shown (as ML ratings are)."""
    rng = np.random.default_rng(seed)
    items = [*PREFS, "p0", "p1", "other"]
    probs = [*PREFS.values(), 0.02, 0.02]
    probs.append(1 - sum(probs))
    for u in range(users):
        user = f"u{u}"
        for n in range(3):
            key = f"{user}/{n}"
            eps = EPS if recorder.arm_of(user) == "A" else 0.0
            shown = epsilon_slots(EXPLOIT, POOL, K, eps, request_rng(seed, key))
            target = str(rng.choice(items, p=probs))
            recorder.scored(Event(key, user, target, "click", n), shown, K)


def test_ope_of_the_greedy_arm_from_the_exploring_arm_matches_its_measured_value() -> None:
    recorder = ArmRecorder(lambda user: "A" if int(user[1:]) % 2 else "B")
    _simulate(recorder, 3000, seed=4)
    truth = sum(PREFS.values())  # greedy shows every preferred item: HR = their mass
    result = ope_comparison(recorder, "A", "B", n_boot=400)
    hr = result["hr@10"]
    assert result["lists"] == 4500
    assert hr["logged"] < truth - 0.05  # exploring costs hits
    for key in ("ips", "snips"):
        low, high = hr[f"{key}_ci"]
        assert low < hr[key] < high and low < truth < high
    low, high = hr["measured_ci"]
    assert low < truth < high
    assert hr["oracle"] is None
    assert "| hr@10 | B (A, 4500 lists) |" in ope_table([result])


def test_estimate_with_ci_keeps_the_point_estimates() -> None:
    slots = (LoggedSlot("a", 0.5, False, 1.0), LoggedSlot("b", 0.5, True, 0.0))
    lists = [LoggedList(f"u{n % 7}", n, slots, "A") for n in range(30)]
    plain = estimate(lists, greedy_target)
    ci = estimate_with_ci(lists, greedy_target, n_boot=100)
    assert {k: ci[k] for k in plain} == plain
    assert ci["users"] == 7 and ci["ips_ci"] == [2.0, 2.0]  # every list has the same value


def test_the_bootstrap_in_chunks_draws_the_same_replicates(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamrec.evaluation import intervals

    rng = np.random.default_rng(5)
    rows = np.stack([np.ones(500), (rng.random(500) < 0.4).astype(float)], axis=1)
    whole = cluster_bootstrap(rows, ratio(1, 0), n_boot=300, seed=9)
    monkeypatch.setattr(intervals, "WEIGHT_CELLS", 7 * 500)  # 7 replicates at a time
    assert cluster_bootstrap(rows, ratio(1, 0), n_boot=300, seed=9) == whole


def test_the_replay_refuses_arms_that_name_a_model_version() -> None:
    from streamrec.evaluation.arms import replay_arms

    pinned = '[{"name": "A", "model_version": 2}, {"name": "B", "model_version": 2}]'
    with pytest.raises(ValueError, match="model_version"):
        replay_arms(None, None, load_settings(ab_arms=pinned))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs settings with ab_arms"):
        replay_arms(None, None, load_settings())  # type: ignore[arg-type]
