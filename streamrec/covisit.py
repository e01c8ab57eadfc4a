"""Item-to-item co-visitation counted from the event stream.

Every event of a user is paired with that user's previous ``window`` events (a sliding
"session"); each pair adds ``weight(a) * weight(b)`` to both directions, so a purchase counts
more than a click (weights per event type, ``DEFAULT_EVENT_WEIGHTS``). A pair of the same item
is not counted.

Memory stays bounded per item: when an item has more than ``2 * max_neighbors`` neighbours the
weakest are dropped down to ``max_neighbors`` (a standard approximation: rare pairs are the
ones forgotten). The per-user windows are bounded by ``max_users`` (least recently active users
are forgotten first).

Candidates for a user are the neighbours of the last ``recent`` items of the history, each
history item weighted by ``recency_decay ** age`` (age 0 = latest), scores summed.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence

from streamrec.trending import DEFAULT_EVENT_WEIGHTS


class CoVisitation:
    """Weighted co-occurrence counts of items within users' recent windows.

    Args:
        window: previous events of the same user each event is paired with.
        event_weights: weight per event type (unknown types count 1.0).
        max_neighbors: neighbours kept per item (see module docstring).
        max_users: users whose recent window is remembered.
    """

    def __init__(
        self,
        window: int = 20,
        event_weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
        max_neighbors: int = 200,
        max_users: int = 1_000_000,
    ) -> None:
        if window < 1 or max_neighbors < 1 or max_users < 1:
            raise ValueError("window, max_neighbors and max_users must be >= 1")
        self.window = window
        self.event_weights = dict(event_weights)
        self.max_neighbors = max_neighbors
        self.max_users = max_users
        self._recent: OrderedDict[str, deque[tuple[str, float]]] = OrderedDict()
        self._counts: dict[str, dict[str, float]] = {}

    def observe(self, user_id: str, item_id: str, event_type: str) -> list[str]:
        """Count one event; returns the items it was paired with (oldest first)."""
        weight = self.event_weights.get(event_type, 1.0)
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
            pair = weight * other_weight
            self._bump(item_id, other, pair)
            self._bump(other, item_id, pair)
            paired.append(other)
        recent.append((item_id, weight))
        return paired

    def neighbors(self, item_id: str) -> Mapping[str, float]:
        """Co-visitation weights of ``item_id`` with every remembered neighbour."""
        return self._counts.get(item_id, {})

    def count(self, a: str, b: str) -> float:
        """The co-visitation weight of the pair (symmetric)."""
        return self._counts.get(a, {}).get(b, 0.0)

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
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        out = []
        for item_id, score in ranked:
            if (exclude and item_id in exclude) or (
                available is not None and not available(item_id)
            ):
                continue
            out.append((item_id, score))
            if len(out) >= n:
                break
        return out

    def _bump(self, a: str, b: str, weight: float) -> None:
        row = self._counts.get(a)
        if row is None:
            row = self._counts[a] = {}
        row[b] = row.get(b, 0.0) + weight
        if len(row) > 2 * self.max_neighbors:
            keep = sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_neighbors]
            self._counts[a] = dict(keep)
