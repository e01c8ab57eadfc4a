"""Exploration: exact propensities, empirical frequencies, filters, determinism."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamrec.ranking.explore import (
    epsilon_slots,
    exploit_propensity,
    explore_propensity,
    request_rng,
)
from streamrec.ranking.fusion import Fused


def fused(prefix: str, n: int) -> list[Fused]:
    return [Fused(f"{prefix}{i}", float(-i), "ann") for i in range(n)]


@given(st.integers(1, 12), st.floats(0.0, 0.95), st.integers(1, 40))
def test_propensities_of_every_slot_sum_to_one(k, eps, extra) -> None:
    m = k + extra
    for slot in range(k):
        total = sum(exploit_propensity(slot, r, eps) for r in range(k))
        total += m * explore_propensity(eps, m)
        assert total == pytest.approx(1.0)


def test_logged_propensities_match_empirical_frequencies() -> None:
    exploit, pool, k, eps = fused("e", 4), fused("p", 5), 4, 0.3
    runs = 20_000
    seen: Counter[tuple[int, str]] = Counter()
    logged: dict[tuple[int, str], float] = {}
    for n in range(runs):
        for slot, item in enumerate(epsilon_slots(exploit, pool, k, eps, request_rng(7, str(n)))):
            seen[(slot, item.item_id)] += 1
            logged[(slot, item.item_id)] = item.propensity
    for key, p in logged.items():
        assert seen[key] / runs == pytest.approx(p, abs=0.012), key
    # every (slot, item) with a positive exact propensity shows up
    assert sum(logged.values()) == pytest.approx(
        sum(exploit_propensity(s, r, eps) for s in range(k) for r in range(k))
        + k * 5 * explore_propensity(eps, 5)
    )


@given(st.integers(0, 10_000), st.floats(0.0, 0.9))
def test_shown_items_come_from_the_candidates_only_once(seed, eps) -> None:
    exploit, pool = fused("e", 10), fused("p", 20)
    shown = epsilon_slots(exploit, pool, 10, eps, request_rng(seed, "u"))
    ids = [s.item_id for s in shown]
    assert len(ids) == len(set(ids)) == 10
    allowed = {f.item_id for f in exploit} | {f.item_id for f in pool}
    assert set(ids) <= allowed  # filtered items never enter the candidates: never shown
    assert all(s.explored == s.item_id.startswith("p") for s in shown)
    exploit_order = [s.item_id for s in shown if not s.explored]
    assert exploit_order == [f"e{i}" for i in range(len(exploit_order))]


def test_deterministic_per_seed_and_key() -> None:
    exploit, pool = fused("e", 10), fused("p", 50)
    a = epsilon_slots(exploit, pool, 10, 0.5, request_rng(1, "k"))
    b = epsilon_slots(exploit, pool, 10, 0.5, request_rng(1, "k"))
    c = [epsilon_slots(exploit, pool, 10, 0.5, request_rng(2, f"k{n}")) for n in range(5)]
    assert a == b
    assert any(x != a for x in c)


def test_no_exploration_when_off_or_when_candidates_are_short() -> None:
    exploit, pool = fused("e", 10), fused("p", 50)
    for shown in (
        epsilon_slots(exploit, pool, 10, 0.0, request_rng(0, "k")),
        epsilon_slots(exploit, pool[:3], 10, 0.5, request_rng(0, "k")),
        epsilon_slots(exploit[:5], pool, 10, 0.5, request_rng(0, "k")),
    ):
        assert all(s.propensity == 1.0 and not s.explored for s in shown)
    with pytest.raises(ValueError, match="epsilon"):
        epsilon_slots(exploit, pool, 10, 1.0, request_rng(0, "k"))
