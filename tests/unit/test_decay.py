"""DecayClock: boosts and factors, the rebase rule, the no-decay mode."""

from __future__ import annotations

import pytest

from streamrec.ranking.decay import REBASE_HALF_LIVES, DecayClock


class Store:
    """One stored value kept the way Trending and CoVisitation keep theirs."""

    def __init__(self, half_life_ms: float | None) -> None:
        self.value = 0.0
        self.rescales: list[float] = []
        self.clock = DecayClock(half_life_ms, self.rescale)

    def rescale(self, scale: float) -> None:
        self.rescales.append(scale)
        self.value *= scale

    def add(self, weight: float, ts_ms: float) -> None:
        boost = self.clock.boost(ts_ms)  # first: it may rescale the stored value
        self.value += weight * boost

    def decayed(self, now_ms: float | None = None) -> float:
        return self.value * self.clock.factor(now_ms)


def test_a_contribution_halves_after_one_half_life() -> None:
    store = Store(1000.0)
    store.add(1.0, 5000)
    assert store.decayed() == 1.0
    assert store.decayed(6000) == pytest.approx(0.5)
    assert store.decayed(8000) == pytest.approx(0.125)
    store.add(0.0, 6000)  # the clock follows the latest event time
    assert store.clock.now_ms == 6000.0
    assert store.decayed() == pytest.approx(0.5)


def test_the_anchor_moves_only_past_the_rebase_threshold() -> None:
    store = Store(1.0)
    store.add(1.0, 100)
    assert store.clock.anchor_ms == 100.0
    store.add(1.0, 100 + REBASE_HALF_LIVES)  # exactly at the threshold: no rebase
    assert store.clock.anchor_ms == 100.0 and store.rescales == []
    store.add(1.0, 101 + REBASE_HALF_LIVES)
    assert store.clock.anchor_ms == 101.0 + REBASE_HALF_LIVES
    assert store.rescales == [2.0 ** -(1.0 + REBASE_HALF_LIVES)]


def test_a_rebase_keeps_decayed_values_equal() -> None:
    rebased, reference = Store(1000.0), Store(1000.0)
    for ts in (0, 100_000, 250_000):
        rebased.add(1.0, ts)
        reference.add(1.0, ts)
    ts = 257_000  # 257 half-lives after the first event: past the threshold
    rebased.add(2.0, ts)
    assert rebased.rescales and rebased.clock.anchor_ms == float(ts)
    expected = 2.0 + 2.0**-7 + 2.0**-157 + 2.0**-257
    assert rebased.decayed() == pytest.approx(expected, rel=1e-12)
    assert rebased.decayed(ts + 3000) == pytest.approx(expected / 8, rel=1e-12)
    # the same events without the last one, seen from the same time, agree as well
    assert reference.decayed(ts) == pytest.approx(expected - 2.0, rel=1e-12)


def test_no_decay_mode_never_scales_or_moves() -> None:
    store = Store(None)
    for ts in (0, 10**12, 5):
        store.add(1.0, ts)
    assert store.value == 3.0 and store.decayed() == 3.0 and store.decayed(10**15) == 3.0
    assert store.clock.anchor_ms is None and store.clock.now_ms == 0.0
    assert store.rescales == []


def test_no_value_decays_before_the_first_event() -> None:
    assert DecayClock(1000.0, lambda _: None).factor(10**9) == 1.0


def test_rejects_a_non_positive_half_life() -> None:
    with pytest.raises(ValueError, match="half_life_ms"):
        DecayClock(0.0, lambda _: None)
