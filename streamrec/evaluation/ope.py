"""Off-policy estimates of a candidate policy's click rate from logged recommendations.

Log (JSON lines, one record per line, in any order; ``streamrec ope --log PATH``):

* recommendations, as published (``items`` carry ``propensity`` and ``explored``; an item may
  carry ``target_propensity``, the candidate policy's probability for that slot)::

      {"user_id": str, "generated_at": int, "items": [{"item_id": str, "propensity": float,
       "explored": bool, "target_propensity"?: float}, ...]}

  (``ts`` is accepted instead of ``generated_at``; ``arm``, as the worker publishes it in an
  A/B test, groups the lists per arm: ``streamrec ope --by-arm``; when every item of a list
  carries ``reward``, as in the logs ``streamrec replay --ope-log`` writes, those rewards are
  used as they are and no event is joined to the list);
* events of the input topic (``{"event_id", "user_id", "item_id", "type", "ts"}``).

Rewards: slot ``s`` of a list is rewarded 1 when the user has an event on that item after the
list was generated, before the user's next list and within ``horizon_ms``.

Value: expected clicks per list, ``V = sum over slots s of E[reward at s]``; under one click per
list at most, the list's click rate. With ``w = min(pi / mu, clip)`` per logged slot (``mu`` the
logged propensity, ``pi`` the candidate's):

* IPS:  ``V = (1 / N) * sum over lists and slots of w * r`` (unbiased without clipping when
  ``mu > 0`` wherever ``pi > 0``);
* SNIPS: per slot ``sum_n w * r / sum_n w``, summed over slots (biased but consistent, much
  lower variance; invariant to a constant scale of ``w``).

Confidence intervals (``estimate_with_ci``): a bootstrap over users
(``streamrec.evaluation.intervals``) of the IPS, SNIPS and logged values.

Candidate policies: ``greedy`` (the exploit ranking, exploration off: the slot's item has
probability 1 iff it was not explored and no earlier slot was), ``logged`` (the logging policy
itself: every weight 1, a sanity check) and ``field`` (``target_propensity`` from the log).
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.evaluation.intervals import cluster_bootstrap, ratio

TargetFn = Callable[["LoggedList"], list[float]]


@dataclass(frozen=True, slots=True)
class LoggedSlot:
    """One shown item with its logged propensity and observed reward."""

    item_id: str
    propensity: float
    explored: bool
    reward: float = 0.0
    target_propensity: float | None = None


@dataclass(frozen=True, slots=True)
class LoggedList:
    """One logged recommendation list."""

    user_id: str
    ts: int
    slots: tuple[LoggedSlot, ...]
    arm: str | None = None


def greedy_target(logged: LoggedList) -> list[float]:
    """Exploration off: slot s shows the exploit item of rank s with probability 1."""
    out, clean = [], True
    for slot in logged.slots:
        clean = clean and not slot.explored
        out.append(1.0 if clean else 0.0)
    return out


def logged_target(logged: LoggedList) -> list[float]:
    """The logging policy itself (weights 1)."""
    return [slot.propensity for slot in logged.slots]


def field_target(logged: LoggedList) -> list[float]:
    """The candidate's probabilities carried in the log (missing: 0)."""
    return [slot.target_propensity or 0.0 for slot in logged.slots]


TARGETS: dict[str, TargetFn] = {"greedy": greedy_target, "logged": logged_target}
TARGETS["field"] = field_target


def estimate(lists: Sequence[LoggedList], target: TargetFn, clip: float = 100.0) -> dict[str, Any]:
    """IPS and SNIPS estimates of the candidate's expected clicks per list.

    Args:
        lists: logged lists with rewards.
        target: the candidate policy's probability per slot of each list.
        clip: largest importance weight (``math.inf`` for none).

    Returns:
        ``ips``, ``ips_stderr``, ``snips``, ``logged_value`` (mean observed clicks per list),
        ``lists``, ``clipped_share`` (share of nonzero weights that were clipped), ``clip``.
    """
    if clip <= 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    per_list: list[float] = []
    num: dict[int, float] = defaultdict(float)
    den: dict[int, float] = defaultdict(float)
    clipped = nonzero = 0
    observed = 0.0
    for logged in lists:
        total = 0.0
        for s, (slot, pi) in enumerate(zip(logged.slots, target(logged), strict=True)):
            observed += slot.reward
            if slot.propensity <= 0:
                continue
            raw = pi / slot.propensity
            weight = min(raw, clip)
            nonzero += int(raw > 0)
            clipped += int(raw > clip)
            total += weight * slot.reward
            num[s] += weight * slot.reward
            den[s] += weight
        per_list.append(total)
    n = len(per_list)
    ips = sum(per_list) / n if n else 0.0
    var = sum((v - ips) ** 2 for v in per_list) / (n - 1) if n > 1 else 0.0
    return {
        "ips": ips,
        "ips_stderr": math.sqrt(var / n) if n else 0.0,
        "snips": sum(num[s] / den[s] for s in den if den[s] > 0),
        "logged_value": observed / n if n else 0.0,
        "lists": n,
        "clipped_share": clipped / nonzero if nonzero else 0.0,
        "clip": clip,
    }


def estimate_with_ci(
    lists: Sequence[LoggedList],
    target: TargetFn,
    clip: float = 100.0,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """``estimate`` plus intervals from a bootstrap over users.

    Returns:
        ``estimate``'s keys plus ``ips_ci``, ``snips_ci`` and ``logged_ci`` (each
        ``[low, high]``), ``users`` and ``level``.
    """
    out = estimate(lists, target, clip)
    rows = _user_rows(lists, target, clip)
    slots = (rows.shape[1] - 3) // 2

    def snips(totals: np.ndarray) -> np.ndarray:
        num, den = totals[:, 3 : 3 + slots], totals[:, 3 + slots :]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0).sum(1))

    for key, stat in (("ips", ratio(2, 0)), ("snips", snips), ("logged", ratio(1, 0))):
        _, low, high = cluster_bootstrap(rows, stat, n_boot, level, seed)
        out[f"{key}_ci"] = [low, high]
    out["users"] = rows.shape[0]
    out["level"] = level
    return out


def _user_rows(lists: Sequence[LoggedList], target: TargetFn, clip: float) -> np.ndarray:
    """Per user: lists, observed reward, IPS sum, then per slot the SNIPS numerators and
    denominators (the sums ``estimate`` makes, split by user)."""
    slots = max((len(x.slots) for x in lists), default=0)
    index: dict[str, int] = {}
    for logged in lists:
        index.setdefault(logged.user_id, len(index))
    rows = np.zeros((max(len(index), 1), 3 + 2 * slots))
    for logged in lists:
        row = rows[index[logged.user_id]]
        row[0] += 1
        for s, (slot, pi) in enumerate(zip(logged.slots, target(logged), strict=True)):
            row[1] += slot.reward
            if slot.propensity <= 0:
                continue
            weight = min(pi / slot.propensity, clip)
            row[2] += weight * slot.reward
            row[3 + s] += weight * slot.reward
            row[3 + slots + s] += weight
    return rows


def by_arm(lists: Sequence[LoggedList]) -> dict[str, list[LoggedList]]:
    """The lists per arm (``-`` for lists logged outside an A/B test), by arm name."""
    out: dict[str, list[LoggedList]] = defaultdict(list)
    for logged in lists:
        out[logged.arm or "-"].append(logged)
    return dict(sorted(out.items()))


def _slot(raw: dict[str, Any]) -> LoggedSlot:
    target = raw.get("target_propensity")
    return LoggedSlot(
        item_id=str(raw["item_id"]),
        propensity=float(raw.get("propensity", 1.0)),
        explored=bool(raw.get("explored", False)),
        reward=float(raw.get("reward", 0.0)),
        target_propensity=None if target is None else float(target),
    )


def join_rewards(
    lists: Sequence[LoggedList], events: Sequence[tuple[str, str, int]], horizon_ms: int
) -> list[LoggedList]:
    """Attach rewards: (user, item, ts) events after a list, before the user's next list."""
    by_user: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for user, item, ts in events:
        by_user[user].append((ts, item))
    for seq in by_user.values():
        seq.sort()
    next_ts: dict[int, int] = {}
    own: dict[str, list[int]] = defaultdict(list)
    for pos, logged in enumerate(lists):
        own[logged.user_id].append(pos)
    for positions in own.values():
        positions.sort(key=lambda p: lists[p].ts)
        for a, b in pairwise(positions):
            next_ts[a] = lists[b].ts
    out = []
    for pos, logged in enumerate(lists):
        seq = by_user.get(logged.user_id, [])
        end = min(next_ts.get(pos, math.inf), logged.ts + horizon_ms)
        start = bisect_right(seq, (logged.ts, "\U0010ffff"))
        later = set()
        for ts, item in seq[start:]:
            if ts > end:
                break
            later.add(item)
        slots = tuple(
            LoggedSlot(
                s.item_id, s.propensity, s.explored, float(s.item_id in later), s.target_propensity
            )
            for s in logged.slots
        )
        out.append(LoggedList(logged.user_id, logged.ts, slots, logged.arm))
    return out


def read_log(path: str | Path, horizon_ms: int = 3_600_000) -> list[LoggedList]:
    """Read a log of recommendations and events (module docstring) and join the rewards."""
    lists: list[LoggedList] = []
    rewarded: list[LoggedList] = []  # every item carries its reward: nothing to join
    events: list[tuple[str, str, int]] = []
    for number, text in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
            if "items" in obj:
                ts = int(obj.get("generated_at", obj.get("ts", 0)))
                slots = tuple(_slot(raw) for raw in obj["items"])
                arm = None if obj.get("arm") is None else str(obj["arm"])
                given = bool(obj["items"]) and all("reward" in raw for raw in obj["items"])
                (rewarded if given else lists).append(
                    LoggedList(str(obj["user_id"]), ts, slots, arm)
                )
            else:
                events.append((str(obj["user_id"]), str(obj["item_id"]), int(obj["ts"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a recommendation or event ({exc})") from None
    return rewarded + join_rewards(lists, events, horizon_ms)
