"""Online quality signals over sliding windows (pure: the clock is injected, no I/O, no locks).

What the worker feeds in, once per published recommendation, is a ``RecObservation``: the event
that triggered it, the user's history length and the recommended item ids. ``QualityTracker``
turns those into the numbers ``streamrec.ops.metrics`` exports:

- catalog coverage: distinct items recommended in the window / searchable items;
- cold-start share: recommendations computed from a history shorter than ``cold_start_history``;
- exploration rate: recommended slots filled by exploration / all recommended slots;
- clicked rank: for a click on an item that was in the user's previous recommendation, its
  1-based rank there (the mean over the window), and the share of clicks that were such hits.

Every window keeps at most ``max_events`` entries, none older than ``max_age_s``. The previous
recommendation is remembered for the ``max_users`` most recently seen users (LRU), which bounds
memory; user ids never leave this module (they are never metric labels).
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

COLD_START_HISTORY = 3
DEFAULT_MAX_EVENTS = 10_000
DEFAULT_MAX_AGE_S = 900.0
DEFAULT_MAX_USERS = 100_000


@dataclass(frozen=True, slots=True)
class RecObservation:
    """One published recommendation and the event that caused it.

    Attributes:
        user_id: the user (kept only in the bounded LRU of previous recommendations).
        event_type: ``click`` or ``purchase``.
        item_id: the item of the triggering event.
        history_len: events in the user's history, this one included.
        items: recommended item ids, best first.
        explored: how many of ``items`` were placed by exploration (0 without exploration).
    """

    user_id: str
    event_type: str
    item_id: str
    history_len: int
    items: tuple[str, ...]
    explored: int = 0


class SlidingWindow(Generic[T]):
    """Values with their time, bounded by count and by age.

    Args:
        max_events: keep at most this many values (the oldest go first).
        max_age_s: drop values older than this many seconds.
        clock: seconds (any monotonic-enough origin).
    """

    def __init__(self, max_events: int, max_age_s: float, clock: Callable[[], float]) -> None:
        if max_events < 1 or max_age_s <= 0:
            raise ValueError("a window needs max_events >= 1 and max_age_s > 0")
        self.max_events = max_events
        self.max_age_s = max_age_s
        self.clock = clock
        self._items: deque[tuple[float, T]] = deque()

    def add(self, value: T) -> list[T]:
        """Append a value; returns the values it pushed out (by count or age)."""
        self._items.append((self.clock(), value))
        out = self.expire()
        while len(self._items) > self.max_events:
            out.append(self._items.popleft()[1])
        return out

    def expire(self) -> list[T]:
        """Drop values older than ``max_age_s``; returns them."""
        horizon = self.clock() - self.max_age_s
        out = []
        while self._items and self._items[0][0] < horizon:
            out.append(self._items.popleft()[1])
        return out

    def __len__(self) -> int:
        return len(self._items)

    def values(self) -> list[T]:
        """Current values, oldest first (call ``expire`` first for an up-to-date view)."""
        return [v for _, v in self._items]


class CoverageTracker:
    """Distinct items among the recommendations of the window."""

    def __init__(self, window: SlidingWindow[tuple[str, ...]]) -> None:
        self.window = window
        self._counts: Counter[str] = Counter()

    def add(self, items: Iterable[str]) -> None:
        """Record one recommendation list."""
        items = tuple(dict.fromkeys(items))
        self._counts.update(items)
        self._forget(self.window.add(items))

    def distinct(self) -> int:
        """Distinct items recommended in the window."""
        self._forget(self.window.expire())
        return len(self._counts)

    def coverage(self, catalog_size: int) -> float:
        """Distinct recommended items / catalog size, in [0, 1] (0 for an empty catalog)."""
        if catalog_size <= 0:
            return 0.0
        return min(1.0, self.distinct() / catalog_size)

    def _forget(self, lists: list[tuple[str, ...]]) -> None:
        for items in lists:
            self._counts.subtract(items)
            for item in items:
                if self._counts[item] <= 0:
                    del self._counts[item]


class RatioTracker:
    """Sum of numerators / sum of denominators over a window (``None`` when empty)."""

    def __init__(self, window: SlidingWindow[tuple[float, float]]) -> None:
        self.window = window
        self._num = 0.0
        self._den = 0.0

    def add(self, numerator: float, denominator: float = 1.0) -> None:
        """Record one observation (a share: ``add(1 if hit else 0)``)."""
        self._num += numerator
        self._den += denominator
        self._forget(self.window.add((numerator, denominator)))

    def value(self) -> float | None:
        """The windowed ratio, or ``None`` when the window holds no denominator."""
        self._forget(self.window.expire())
        if len(self.window) == 0 or self._den <= 0:
            return None
        return self._num / self._den

    def _forget(self, gone: list[tuple[float, float]]) -> None:
        for num, den in gone:
            self._num -= num
            self._den -= den
        if len(self.window) == 0:  # no float drift once empty
            self._num = self._den = 0.0


@dataclass(frozen=True, slots=True)
class QualitySnapshot:
    """The current values; ``None`` where the window has nothing to say yet."""

    recommended_items: int
    coverage: float
    cold_start_share: float | None
    exploration_rate: float | None
    clicked_rank_mean: float | None
    click_hit_share: float | None


class QualityTracker:
    """All quality signals, over windows of the same size.

    Args:
        clock: seconds.
        max_events: window size in observations.
        max_age_s: window length in seconds.
        max_users: previous recommendations remembered (LRU) for the clicked-rank signal.
        cold_start_history: histories shorter than this count as cold start.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        max_events: int = DEFAULT_MAX_EVENTS,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        max_users: int = DEFAULT_MAX_USERS,
        cold_start_history: int = COLD_START_HISTORY,
    ) -> None:
        def window() -> SlidingWindow[Any]:
            return SlidingWindow(max_events, max_age_s, clock)

        self.max_users = max_users
        self.cold_start_history = cold_start_history
        self.coverage = CoverageTracker(window())
        self.cold_start = RatioTracker(window())
        self.exploration = RatioTracker(window())
        self.clicked_rank = RatioTracker(window())
        self.click_hits = RatioTracker(window())
        self._previous: OrderedDict[str, tuple[str, ...]] = OrderedDict()

    def observe(self, obs: RecObservation) -> None:
        """Record one recommendation (in publication order, per user)."""
        if obs.event_type == "click":
            self._score_click(obs.user_id, obs.item_id)
        self.coverage.add(obs.items)
        self.cold_start.add(1.0 if obs.history_len < self.cold_start_history else 0.0)
        if obs.items:
            self.exploration.add(float(min(obs.explored, len(obs.items))), float(len(obs.items)))
        self._previous[obs.user_id] = obs.items
        self._previous.move_to_end(obs.user_id)
        while len(self._previous) > self.max_users:
            self._previous.popitem(last=False)

    def _score_click(self, user_id: str, item_id: str) -> None:
        previous = self._previous.get(user_id)
        if previous is None:
            return  # no recommendation was shown to this user (that we remember)
        if item_id in previous:
            self.clicked_rank.add(float(previous.index(item_id) + 1))
            self.click_hits.add(1.0)
        else:
            self.click_hits.add(0.0)

    def snapshot(self, catalog_size: int) -> QualitySnapshot:
        """Current values; ``catalog_size`` is the number of searchable items."""
        return QualitySnapshot(
            recommended_items=self.coverage.distinct(),
            coverage=self.coverage.coverage(catalog_size),
            cold_start_share=self.cold_start.value(),
            exploration_rate=self.exploration.value(),
            clicked_rank_mean=self.clicked_rank.value(),
            click_hit_share=self.click_hits.value(),
        )
