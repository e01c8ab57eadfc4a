"""A/B arms in the replay: each arm's metrics side by side with intervals, and off-policy
estimates of one arm computed from another arm's logged lists.

``ArmRecorder`` is a ``replay.ReplayObserver``: it keeps every scored list (the list a user
had when the user's next event came) with its logged propensities and, per slot, the reward
``1`` when the slot shows the event's item (a **click proxy**: MovieLens ratings are not
answers to our lists, so "the user's next rated item was in the list at slot s" stands for a
click at s). A list's summed reward is its hit (HR@10); with the gain ``1 / log2(s + 2)`` per
slot it is its NDCG@10. So the IPS value of a policy over scored lists estimates the HR@10 (or
NDCG@10) that policy would have had on the logging arm's users.

Because ratings do not depend on what was shown, a slot's reward depends only on the item at
that slot: the item-position model under which the slot-wise IPS of ``ope.estimate`` is
unbiased (with weights unclipped and exploration > 0 wherever the target shows an item).
Estimable here: ``greedy`` (the logging arm with exploration off: its exploit slots are the
target's items); an arm with other weights shows items the logging arm gave no propensity to,
which this estimator cannot weigh (``greedy_pairs`` pairs the arms it can compare).

Intervals: bootstrap over users (``intervals``), the arm's users being its clusters.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamrec.core.events import Event
from streamrec.evaluation.intervals import cluster_bootstrap, coverage_interval, ratio
from streamrec.evaluation.ope import LoggedList, LoggedSlot, by_arm, estimate_with_ci, greedy_target
from streamrec.ops.settings import Settings
from streamrec.ranking.arms import Arm
from streamrec.ranking.explore import ShownItem
from streamrec.ranking.ranker import RankingConfig

if TYPE_CHECKING:
    from streamrec.evaluation.replay import ReplayData
    from streamrec.ranking.encoder import Encoder


class ArmRecorder:
    """Records the replay's scored and produced lists by the user's arm.

    Args:
        arm_of: the user's arm (``Pipeline.arm_of``, or the experiment's assignment when the
            replay ranks every user with one policy: the counterfactual of an arm's users).
    """

    def __init__(self, arm_of: Callable[[str], str | None]) -> None:
        self.arm_of = arm_of
        self.lists: list[LoggedList] = []
        self.items: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))

    def scored(self, event: Event, shown: Sequence[ShownItem], k: int) -> None:
        """Keep the list with a reward of 1 at the slot of the event's item."""
        slots = tuple(
            LoggedSlot(s.item_id, s.propensity, s.explored, float(s.item_id == event.item_id))
            for s in shown[:k]
        )
        self.lists.append(LoggedList(event.user_id, event.ts, slots, self._arm(event.user_id)))

    def listed(self, user_id: str, shown: Sequence[ShownItem]) -> None:
        """Count a produced list's items for the arm's coverage."""
        self.items[self._arm(user_id)][user_id].update(s.item_id for s in shown)

    def _arm(self, user_id: str) -> str:
        return self.arm_of(user_id) or "-"

    def write_log(self, path: str | Path) -> None:
        """The scored lists as a ``streamrec ope`` log (rewards given per item, ``arm``)."""
        with Path(path).open("w", encoding="utf-8") as out:
            for logged in self.lists:
                items = [
                    {
                        "item_id": s.item_id,
                        "propensity": s.propensity,
                        "explored": s.explored,
                        "reward": s.reward,
                    }
                    for s in logged.slots
                ]
                record = {"user_id": logged.user_id, "generated_at": logged.ts, "items": items}
                out.write(json.dumps({**record, "arm": logged.arm}) + "\n")


def ndcg_rewards(lists: Sequence[LoggedList]) -> list[LoggedList]:
    """The lists with each slot's reward times its NDCG gain ``1 / log2(s + 2)``."""
    return [
        dataclasses.replace(
            x,
            slots=tuple(
                dataclasses.replace(slot, reward=slot.reward / math.log2(s + 2))
                for s, slot in enumerate(x.slots)
            ),
        )
        for x in lists
    ]


def list_metrics(
    lists: Sequence[LoggedList], n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """HR@10 and NDCG@10 over scored lists with user-bootstrap intervals, and the share of
    explored slots."""
    users: dict[str, int] = {}
    for x in lists:
        users.setdefault(x.user_id, len(users))
    rows = np.zeros((max(len(users), 1), 3))
    slots = explored = 0
    for x in lists:
        row = rows[users[x.user_id]]
        row[0] += 1
        row[1] += sum(s.reward for s in x.slots)
        row[2] += sum(s.reward / math.log2(i + 2) for i, s in enumerate(x.slots))
        slots += len(x.slots)
        explored += sum(s.explored for s in x.slots)
    out: dict[str, Any] = {"events": len(lists), "users": len(users)}
    for key, col in (("hr@10", 1), ("ndcg@10", 2)):
        value, low, high = cluster_bootstrap(rows, ratio(col, 0), n_boot, level, seed)
        out[key] = {"value": value, "ci": [low, high]}
    out["exploration_rate"] = explored / max(slots, 1)
    return out


def arm_report(
    recorder: ArmRecorder,
    catalog_size: int,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per arm: events, users, HR@10, NDCG@10 and coverage (distinct items of the lists
    produced for the arm's users / catalog), each with a user-bootstrap interval."""
    out = {}
    for arm, lists in by_arm(recorder.lists).items():
        row = list_metrics(lists, n_boot, level, seed)
        produced = recorder.items.get(arm, {})
        catalog = sorted({i for items in produced.values() for i in items})
        column = {item: c for c, item in enumerate(catalog)}
        incidence = np.zeros((max(len(produced), 1), max(len(catalog), 1)), dtype=np.float32)
        for r, items in enumerate(produced.values()):
            incidence[r, [column[i] for i in items]] = 1.0
        value, low, high = coverage_interval(incidence, catalog_size, n_boot, level, seed)
        row["coverage"] = {"value": value, "ci": [low, high]}
        out[arm] = row
    return out


def greedy_pairs(settings: Settings) -> list[tuple[str, str]]:
    """(logging arm, target arm) pairs of ``settings.ab_arms`` where the target is the
    logging arm with exploration off (everything else equal) and the logging arm explores:
    the pairs the greedy off-policy estimate compares."""
    base = RankingConfig.from_settings(settings)
    arms = {a.name: Arm(a.name, a.weight, a.overrides()) for a in settings.ab_arms}
    demote = {
        name: arm.overrides.get("impression_demote_strength", settings.impression_demote_strength)
        for name, arm in arms.items()
    }
    configs = {name: arm.config(base) for name, arm in arms.items()}
    pairs = []
    for log_name, log_cfg in configs.items():
        if log_cfg.explore_rate <= 0:
            continue
        greedy = dataclasses.replace(log_cfg, explore_rate=0.0)
        for name, cfg in configs.items():
            if cfg == greedy and demote[name] == demote[log_name]:
                pairs.append((log_name, name))
    return pairs


def ope_comparison(
    recorder: ArmRecorder,
    logging_arm: str,
    target_arm: str,
    oracle: ArmRecorder | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The greedy estimate of ``target_arm`` from ``logging_arm``'s lists next to
    ``target_arm``'s measured value (its own users), for HR@10 and NDCG@10.

    ``oracle``: a replay that ranked every user with the target's policy, recorded with the
    same assignment: its lists of the logging arm's users give the value the estimate aims at
    (same users), which separates the estimator's error from the difference between users.
    """
    logged = by_arm(recorder.lists).get(logging_arm, [])
    measured = list_metrics(by_arm(recorder.lists).get(target_arm, []), n_boot, level, seed)
    truth = same = None
    if oracle is not None:
        truth = list_metrics(by_arm(oracle.lists).get(logging_arm, []), n_boot, level, seed)
        # the target's own users get the same lists in both replays: a check of the oracle
        same = list_metrics(by_arm(oracle.lists).get(target_arm, []), 0)
    out: dict[str, Any] = {"logging_arm": logging_arm, "target_arm": target_arm, "target": "greedy"}
    for key, lists in (("hr@10", logged), ("ndcg@10", ndcg_rewards(logged))):
        est = estimate_with_ci(lists, greedy_target, math.inf, n_boot, level, seed)
        out[key] = {
            "ips": est["ips"],
            "ips_ci": est["ips_ci"],
            "snips": est["snips"],
            "snips_ci": est["snips_ci"],
            "logged": est["logged_value"],
            "measured": measured[key]["value"],
            "measured_ci": measured[key]["ci"],
            "oracle": None if truth is None else truth[key]["value"],
            "oracle_ci": None if truth is None else truth[key]["ci"],
            "oracle_on_target_users": None if same is None else same[key]["value"],
        }
    out["lists"] = len(logged)
    return out


def _cell(metric: dict[str, Any], digits: int = 4) -> str:
    low, high = metric["ci"]
    return f"{metric['value']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def arms_table(report: dict[str, dict[str, Any]]) -> str:
    """The arms side by side (Markdown): value [interval] per metric."""
    head = "| arm | users | events | HR@10 | NDCG@10 | coverage | explored |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for arm, row in report.items():
        lines.append(
            f"| {arm} | {row['users']} | {row['events']} | {_cell(row['hr@10'])} | "
            f"{_cell(row['ndcg@10'])} | {_cell(row['coverage'], 3)} | "
            f"{row['exploration_rate']:.3f} |"
        )
    return "\n".join(lines)


def ope_table(comparisons: Sequence[dict[str, Any]]) -> str:
    """Off-policy estimates next to the measured (and, if known, oracle) values (Markdown)."""
    head = "| metric | target (from logs of) | IPS | SNIPS | measured on target's users |"
    head += " target's policy on the logging arm's users |"
    lines = [head, "|---|---|---|---|---|---|"]

    def fmt(value: float | None, ci: Sequence[float] | None) -> str:
        if value is None or ci is None:
            return "-"
        return f"{value:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"

    for c in comparisons:
        for key in ("hr@10", "ndcg@10"):
            m = c[key]
            lines.append(
                f"| {key} | {c['target_arm']} ({c['logging_arm']}, {c['lists']} lists) | "
                f"{fmt(m['ips'], m['ips_ci'])} | {fmt(m['snips'], m['snips_ci'])} | "
                f"{fmt(m['measured'], m['measured_ci'])} | {fmt(m['oracle'], m['oracle_ci'])} |"
            )
    return "\n".join(lines)


def replay_arms(
    data: ReplayData,
    encoder: Encoder,
    settings: Settings,
    oracle: bool = False,
    n_boot: int = 1000,
    progress: bool = True,
    log_path: str | Path | None = None,
) -> dict[str, Any]:
    """One replay of the A/B test of ``settings.ab_arms``: users ranked by their arm's policy.

    Args:
        data: the split log and model.
        encoder: the model's encoder.
        settings: with ``ab_arms`` (two or more arms).
        oracle: also replay every user with each greedy pair's target policy (one more replay
            per pair) for the value the off-policy estimate aims at.
        n_boot: bootstrap replicates of every interval.
        progress: show progress bars.
        log_path: write the scored lists there as a ``streamrec ope`` log.

    Returns:
        ``arms`` (``arm_report``), ``ope`` (``ope_comparison`` per greedy pair) and the
        replay's own summary (``replay``, all users together).
    """
    from streamrec.evaluation.replay import replay_config
    from streamrec.ranking.arms import Assignment

    if not settings.ab_arms:
        raise ValueError("replay_arms needs settings with ab_arms")
    if settings.pinned_model_version() is not None:
        raise ValueError(
            "the replay ranks every arm with its --model: remove the arms' model_version "
            "(replay each model version on its own to compare them)"
        )
    arms = [Arm(a.name, a.weight, a.overrides()) for a in settings.ab_arms]
    assignment = Assignment(arms, settings.ab_salt)
    recorder = ArmRecorder(assignment.arm_of)
    base = RankingConfig.from_settings(settings)
    summary = replay_config(
        data, encoder, base, "arms", settings=settings, progress=progress, observer=recorder
    )
    if log_path is not None:
        recorder.write_log(log_path)
    comparisons = []
    for log_arm, target in greedy_pairs(settings):
        truth = None
        if oracle:
            spec = next(a for a in arms if a.name == target)
            strength = spec.overrides.get(
                "impression_demote_strength", settings.impression_demote_strength
            )
            update = {"ab_arms": (), "impression_demote_strength": strength}
            alone = settings.model_copy(update=update)
            config = spec.config(base)
            truth = ArmRecorder(assignment.arm_of)
            name = f"oracle {target}"
            replay_config(
                data, encoder, config, name, settings=alone, progress=progress, observer=truth
            )
        comparisons.append(ope_comparison(recorder, log_arm, target, truth, n_boot))
    report = arm_report(recorder, len(data.catalog), n_boot)
    return {"arms": report, "ope": comparisons, "replay": summary}
