"""Exponential time decay on event time, shared by ``trending`` and ``covisit``.

A contribution made at event time ``ts`` is worth ``2 ** (-(t - ts) / half_life)`` at time
``t``. Callers store every contribution rescaled to an anchor time, ``value * boost(ts)`` with
``boost(ts) = 2 ** ((ts - anchor) / half_life)``, so adding costs O(1) and no stored value has
to change when time moves: a stored value times ``factor()`` is its value decayed to the latest
event time, and a common factor changes no ranking.

``boost`` grows without bound as event time moves on, so once ``ts`` is more than
``REBASE_HALF_LIVES`` half-lives past the anchor the anchor moves to ``ts``: the caller's
``rescale`` callback multiplies every stored value by ``2 ** (-(ts - anchor) / half_life)``
once, and later boosts start from 1 again.

The clock is the events' own ``ts`` (no wall clock: replays give the same values).
"""

from __future__ import annotations

from collections.abc import Callable

REBASE_HALF_LIVES = 256.0  # 2**256 is far from float overflow (2**1024)


class DecayClock:
    """The anchor, the latest event time and the decay arithmetic of one decayed store.

    Args:
        half_life_ms: event-time milliseconds after which a contribution counts half; None
            disables decay (every boost and factor is 1.0 and the clock never moves).
        rescale: called with the factor to multiply every stored value by when the anchor
            moves (see module docstring).
    """

    def __init__(self, half_life_ms: float | None, rescale: Callable[[float], None]) -> None:
        if half_life_ms is not None and half_life_ms <= 0:
            raise ValueError(f"half_life_ms must be > 0 or None, got {half_life_ms}")
        self.half_life_ms = half_life_ms
        self._rescale = rescale
        self._anchor_ms: float | None = None
        self._now_ms = 0.0

    @property
    def anchor_ms(self) -> float | None:
        """The event time stored values are relative to (None before the first event)."""
        return self._anchor_ms

    @property
    def now_ms(self) -> float:
        """The latest event time seen (0.0 before the first event)."""
        return self._now_ms

    def boost(self, ts_ms: float) -> float:
        """Advance the clock to ``ts_ms``; the scale to store a contribution made at ``ts_ms``.

        Rebases first (calling ``rescale``) when ``ts_ms`` is past the threshold, so call it
        before reading a stored value to add to.
        """
        half_life_ms = self.half_life_ms
        if half_life_ms is None:
            return 1.0
        if self._anchor_ms is None:
            self._anchor_ms = float(ts_ms)
        self._now_ms = max(self._now_ms, float(ts_ms))
        if (ts_ms - self._anchor_ms) / half_life_ms > REBASE_HALF_LIVES:
            self._rebase(float(ts_ms))
        return float(2.0 ** ((ts_ms - self._anchor_ms) / half_life_ms))

    def factor(self, now_ms: float | None = None) -> float:
        """Stored values times this are decayed to ``now_ms`` (default: the latest event)."""
        if self.half_life_ms is None or self._anchor_ms is None:
            return 1.0
        now = self._now_ms if now_ms is None else now_ms
        return float(2.0 ** (-(now - self._anchor_ms) / self.half_life_ms))

    def _rebase(self, new_anchor_ms: float) -> None:
        assert self._anchor_ms is not None and self.half_life_ms is not None
        self._rescale(2.0 ** (-(new_anchor_ms - self._anchor_ms) / self.half_life_ms))
        self._anchor_ms = new_anchor_ms
