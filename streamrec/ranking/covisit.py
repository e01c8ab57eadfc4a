"""Item-to-item co-visitation counted from the event stream.

Every event of a user is paired with that user's previous ``window`` events (a sliding
"session"); each pair adds ``weight(a) * weight(b)`` to both directions, so a purchase counts
more than a click (weights per event type, ``DEFAULT_EVENT_WEIGHTS``). A pair of the same item
is not counted.

With a ``half_life_s``, every pair's contribution halves every half-life of *event time* (the
events' ``ts``, as in ``streamrec.ranking.trending``): old co-occurrences fade, and a count rebuilt
from the recent part of the stream approximates the count of a long-running worker. Counts are
stored rescaled to an anchor time (:class:`~streamrec.ranking.decay.DecayClock`), so decaying
costs nothing per event (a common factor does not change any ranking); ``neighbors`` and
``count`` return the decayed values.

Memory stays bounded per item: when an item has more than ``2 * max_neighbors`` neighbours the
weakest are dropped down to ``max_neighbors`` (a standard approximation: rare pairs are the
ones forgotten). The per-user windows are bounded by ``max_users`` (least recently active users
are forgotten first).

Candidates for a user are the neighbours of the last ``recent`` items of the history, each
history item weighted by ``recency_decay ** age`` (age 0 = latest), scores summed.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence

from streamrec.ranking.decay import DecayClock
from streamrec.ranking.trending import DEFAULT_EVENT_WEIGHTS


class CoVisitation:
    """Weighted co-occurrence counts of items within users' recent windows.

    Args:
        window: previous events of the same user each event is paired with.
        event_weights: weight per event type (unknown types count 1.0).
        max_neighbors: neighbours kept per item (see module docstring).
        max_users: users whose recent window is remembered.
        half_life_s: half-life of a pair's contribution in event-time seconds (None: no
            decay).
    """

    def __init__(
        self,
        window: int = 20,
        event_weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
        max_neighbors: int = 200,
        max_users: int = 1_000_000,
        half_life_s: float | None = None,
    ) -> None:
        if window < 1 or max_neighbors < 1 or max_users < 1:
            raise ValueError("window, max_neighbors and max_users must be >= 1")
        if half_life_s is not None and half_life_s <= 0:
            raise ValueError(f"half_life_s must be > 0 or None, got {half_life_s}")
        self.half_life_ms = None if half_life_s is None else half_life_s * 1000.0
        self._clock = DecayClock(self.half_life_ms, self._rescale)
        self.window = window
        self.event_weights = dict(event_weights)
        self.max_neighbors = max_neighbors
        self.max_users = max_users
        self._recent: OrderedDict[str, deque[tuple[str, float]]] = OrderedDict()
        self._counts: dict[str, dict[str, float]] = {}

    def observe(
        self, user_id: str, item_id: str, event_type: str, ts_ms: int | None = None
    ) -> list[str]:
        """Count one event (at event time ``ts_ms``, needed only with a half-life).

        Returns:
            the items it was paired with (oldest first).
        """
        weight = self.event_weights.get(event_type, 1.0)
        boost = 1.0 if ts_ms is None else self._clock.boost(ts_ms)
        recent = self._recent.get(user_id)
        if recent is None:
            recent = deque(maxlen=self.window)
            self._recent[user_id] = recent
            if len(self._recent) > self.max_users:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(user_id)
        paired = []
        for other, other_weight in recent:
            if other == item_id:
                continue
            pair = weight * other_weight * boost
            self._bump(item_id, other, pair)
            self._bump(other, item_id, pair)
            paired.append(other)
        recent.append((item_id, weight))
        return paired

    def neighbors(self, item_id: str) -> Mapping[str, float]:
        """Co-visitation weights (decayed to the latest event time) of ``item_id``."""
        row = self._counts.get(item_id, {})
        factor = self._clock.factor()
        return row if factor == 1.0 else {other: w * factor for other, w in row.items()}

    def count(self, a: str, b: str) -> float:
        """The co-visitation weight of the pair (symmetric, decayed)."""
        return self._counts.get(a, {}).get(b, 0.0) * self._clock.factor()

    def _rescale(self, scale: float) -> None:
        """Multiply every stored count by ``scale`` (the decay clock's anchor moved)."""
        for row in self._counts.values():
            for other in row:
                row[other] *= scale

    def candidates(
        self,
        history: Sequence[str],
        n: int,
        exclude: set[str] | None = None,
        available: Callable[[str], bool] | None = None,
        recent: int = 5,
        recency_decay: float = 0.7,
    ) -> list[tuple[str, float]]:
        """Top ``n`` neighbours of the latest ``recent`` history items, best first.

        Ties are broken by item id. Items in ``exclude`` or not ``available`` are skipped.
        """
        scores: dict[str, float] = {}
        tail = list(history[-recent:]) if recent > 0 else []
        for age, item in enumerate(reversed(tail)):
            factor = recency_decay**age
            for other, weight in self._counts.get(item, {}).items():
                scores[other] = scores.get(other, 0.0) + factor * weight
        keep = [
            (item_id, score)
            for item_id, score in scores.items()
            if not (exclude and item_id in exclude) and (available is None or available(item_id))
        ]
        return heapq.nsmallest(n, keep, key=lambda kv: (-kv[1], kv[0]))

    def _bump(self, a: str, b: str, weight: float) -> None:
        row = self._counts.get(a)
        if row is None:
            row = self._counts[a] = {}
        row[b] = row.get(b, 0.0) + weight
        if len(row) > 2 * self.max_neighbors:
            keep = sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_neighbors]
            self._counts[a] = dict(keep)
