"""Off-policy estimation on synthetic logs whose true value is known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from streamrec.evaluation.ope import (
    LoggedList,
    LoggedSlot,
    estimate,
    greedy_target,
    logged_target,
    read_log,
)
from streamrec.ranking.explore import epsilon_slots, request_rng
from streamrec.ranking.fusion import Fused

K, EPS = 3, 0.3


def click_prob(item: str, slot: int) -> float:
    base = {"e0": 0.30, "e1": 0.20, "e2": 0.15}.get(item, 0.05 + 0.05 * int(item[1:]) % 3)
    return base / (1 + slot)  # position bias


def synthetic(n: int, seed: int = 0) -> list[LoggedList]:
    rng = np.random.default_rng(seed)
    exploit = [Fused(f"e{i}", 0.0, "ann") for i in range(K)]
    pool = [Fused(f"p{i}", 0.0, "ann") for i in range(6)]
    out = []
    for row in range(n):
        shown = epsilon_slots(exploit, pool, K, EPS, request_rng(seed, str(row)))
        slots = tuple(
            LoggedSlot(
                s.item_id,
                s.propensity,
                s.explored,
                float(rng.random() < click_prob(s.item_id, slot)),
            )
            for slot, s in enumerate(shown)
        )
        out.append(LoggedList("u", row, slots))
    return out


TRUE_GREEDY = sum(click_prob(f"e{s}", s) for s in range(K))


def test_ips_and_snips_recover_the_greedy_policy_value() -> None:
    lists = synthetic(30_000)
    est = estimate(lists, greedy_target, clip=math.inf)
    assert est["ips"] == pytest.approx(TRUE_GREEDY, abs=4 * est["ips_stderr"] + 1e-3)
    assert est["snips"] == pytest.approx(TRUE_GREEDY, rel=0.05)
    assert est["logged_value"] < TRUE_GREEDY  # exploring costs clicks here
    assert est["clipped_share"] == 0.0


def test_the_logging_policy_estimates_its_own_observed_value() -> None:
    lists = synthetic(2_000, seed=3)
    est = estimate(lists, logged_target)
    assert est["ips"] == pytest.approx(est["logged_value"])
    assert est["snips"] == pytest.approx(est["logged_value"], rel=0.1)


def test_clipping_caps_the_weights() -> None:
    lists = [LoggedList("u", 0, (LoggedSlot("a", 0.01, True, 1.0),))]
    unclipped = estimate(lists, lambda _l: [1.0], clip=math.inf)
    clipped = estimate(lists, lambda _l: [1.0], clip=10.0)
    assert unclipped["ips"] == pytest.approx(100.0)
    assert clipped["ips"] == pytest.approx(10.0)
    assert clipped["clipped_share"] == 1.0
    assert clipped["snips"] == pytest.approx(1.0)  # self-normalised: scale-free
    with pytest.raises(ValueError, match="clip"):
        estimate(lists, greedy_target, clip=0)


def test_greedy_target_is_one_until_the_first_explored_slot() -> None:
    slots = (
        LoggedSlot("a", 0.7, False),
        LoggedSlot("p", 0.05, True),
        LoggedSlot("b", 0.2, False),
    )
    assert greedy_target(LoggedList("u", 0, slots)) == [1.0, 0.0, 0.0]


def test_read_log_joins_later_clicks_before_the_next_list(tmp_path: Path) -> None:
    def rec(ts: int, items: list[str]) -> dict:
        return {
            "user_id": "u",
            "generated_at": ts,
            "items": [{"item_id": i, "propensity": 1.0, "explored": False} for i in items],
        }

    def click(ts: int, item: str, user: str = "u") -> dict:
        return {
            "event_id": f"e{ts}{user}",
            "user_id": user,
            "item_id": item,
            "type": "click",
            "ts": ts,
        }

    lines = [
        rec(100, ["a", "b"]),
        click(150, "b"),
        click(160, "a", user="v"),
        rec(200, ["a", "c"]),
        click(250, "c"),
        click(10_000, "a"),
    ]
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    lists = read_log(path, horizon_ms=1000)
    assert [[s.reward for s in lst.slots] for lst in lists] == [[0.0, 1.0], [0.0, 1.0]]
    path.write_text('{"user_id": "u"}\n')
    with pytest.raises(ValueError, match=":1:"):
        read_log(path)
