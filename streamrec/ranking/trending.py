"""A streaming, time-decayed trending list, maintained from the event stream itself.

Each event adds its type's weight to its item; every contribution halves every ``half_life_s``
seconds of *event time*::

    score(item, t) = sum over events e of item:  weight(e.type) * 2 ** (-(t - e.ts) / half_life)

The clock is the events' own ``ts`` (no wall clock: replays give the same list). Scores are kept
in a rescaled form relative to an anchor time (:class:`~streamrec.ranking.decay.DecayClock`), so
``observe`` is O(1) and ranking does not need to touch every score when time moves: a common
factor does not change the order. The anchor moves forward (rescaling everything once) when the
factor would overflow.

Rows are pruned past their decay horizon: whenever the table has doubled since the last prune
(at least ``_PRUNE_MIN_ROWS`` rows), the items whose decayed score has fallen below
``prune_below`` (in units of one weight-1 event: with the default 0.001 and a 7-day half-life,
an item clicked once is dropped about 70 days after its click) are forgotten, so the table
holds at most twice the items that still count, whatever ids the events carried. A pruned row is
reused by the next new item (no copy, no renumbering). Pruning depends on event time only
(replays and restores prune identically); one prune of 1,000,000 rows that drops 280,000 takes
about 0.1 s on the shared development machine (``tests/unit/test_trending.py`` prints it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

from streamrec.ranking.decay import DecayClock

DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = {"click": 1.0, "purchase": 3.0}
_HEAD = 1024  # rows ranked at a time (see Trending._ranking)
_PRUNE_MIN_ROWS = 4096  # no prune below this many rows
_FREE = -1.0  # the score of a pruned row, free for the next new item


class Trending:
    """Exponentially decayed item popularity.

    Args:
        half_life_s: seconds of event time after which a contribution counts half.
        event_weights: weight per event type (unknown types count 1.0).
        prune_below: decayed score under which a row is forgotten when the table is pruned
            (module docstring); 0 never prunes.
    """

    def __init__(
        self,
        half_life_s: float,
        event_weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
        prune_below: float = 0.001,
    ) -> None:
        if half_life_s <= 0:
            raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
        if prune_below < 0:
            raise ValueError(f"prune_below must be >= 0, got {prune_below}")
        self.prune_below = prune_below
        self.pruned = 0  # rows forgotten so far
        self._prune_at = _PRUNE_MIN_ROWS  # items at which the next prune runs
        self._free: list[int] = []  # pruned rows, reused by new items (last = next)
        self.half_life_ms = half_life_s * 1000.0
        self._clock = DecayClock(self.half_life_ms, self._rescale)
        self.event_weights = dict(event_weights)
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._raw = np.zeros(64, dtype=np.float64)
        self._order: np.ndarray | None = None  # cached ranking of the rows, dropped on change
        self._id_array: np.ndarray | None = None  # ids as a numpy array (tie-break), cached

    def observe(self, item_id: str, event_type: str, ts_ms: int) -> None:
        """Count one event of ``event_type`` on ``item_id`` at event time ``ts_ms``."""
        self.add(item_id, self.event_weights.get(event_type, 1.0), ts_ms)

    def add(self, item_id: str, weight: float, ts_ms: float) -> None:
        """Add ``weight`` to ``item_id`` at event time ``ts_ms``."""
        boost = self._clock.boost(ts_ms)
        row = self._row.get(item_id)
        if row is None:
            row = self._new_row(item_id)
        self._raw[row] += weight * boost
        self._order = None

    def score(self, item_id: str, now_ms: float | None = None) -> float:
        """The decayed score of one item at ``now_ms`` (default: the latest event time seen)."""
        row = self._row.get(item_id)
        if row is None or self._clock.anchor_ms is None:
            return 0.0
        return float(self._raw[row] * self._clock.factor(now_ms))

    def ranked(self) -> Iterator[tuple[str, float]]:
        """Every item with a positive score, best first (ties by item id), scores at 'now'."""
        if self._clock.anchor_ms is None:
            return
        factor = self._clock.factor()
        done = 0
        while True:
            order = self._ranking(done)
            for row in order[done:].tolist():
                value = float(self._raw[row])
                if value <= 0.0:
                    return
                yield self._ids[row], value * factor
            if len(order) >= len(self._ids):
                return
            done = len(order)

    def _ranking(self, need: int) -> np.ndarray:
        """Rows best first, at least ``need + _HEAD`` of them (or all): a cached sorted head.

        Only the head is sorted (every row scoring at least the head's last score, so ties are
        ordered exactly): requests read a few hundred items, catalogs may hold millions.
        """
        n = len(self._ids)
        if self._order is not None and (len(self._order) > need or len(self._order) == n):
            return self._order
        raw = self._raw[:n]
        size = min(n, max(_HEAD, 2 * need))
        if size < n:
            threshold = np.partition(raw, n - size)[n - size]
            rows = np.flatnonzero(raw >= threshold)
        else:
            rows = np.arange(n)
        # score descending, then item id (the ids of the head only: a catalog may be large and
        # gain rows between rankings)
        ids = self._id_array[rows] if self._id_array is not None else self._ids_at(rows)
        self._order = rows[np.lexsort((ids, -raw[rows]))]
        return self._order

    def top(
        self,
        n: int,
        exclude: set[str] | None = None,
        available: Callable[[str], bool] | None = None,
    ) -> list[tuple[str, float]]:
        """The ``n`` best items not in ``exclude`` and ``available``, best first."""
        out: list[tuple[str, float]] = []
        if n <= 0:
            return out
        for item_id, score in self.ranked():
            if exclude and item_id in exclude:
                continue
            if available is not None and not available(item_id):
                continue
            out.append((item_id, score))
            if len(out) >= n:
                break
        return out

    def __len__(self) -> int:
        return len(self._row)

    def _ids_at(self, rows: np.ndarray) -> np.ndarray:
        """The ids of ``rows`` as a numpy array; the whole table is cached once it is needed."""
        if len(rows) < len(self._ids) // 4:
            ids = self._ids
            return np.asarray([ids[r] for r in rows.tolist()])
        self._id_array = np.asarray(self._ids)
        return self._id_array[rows]

    def prune(self) -> int:
        """Forget the rows whose decayed score is below ``prune_below``; how many went.

        A forgotten row is marked free (score -1: ``ranked`` stops before it) and reused by the
        next new item, so pruning never renumbers or copies the table.
        """
        n = len(self._ids)
        if self._clock.anchor_ms is None or not self.prune_below or not n:
            return 0
        raw = self._raw[:n]
        drop = np.flatnonzero((raw >= 0.0) & (raw * self._clock.factor() < self.prune_below))
        if not len(drop):
            return 0
        ids, row_of = self._ids, self._row
        for row in drop.tolist():
            del row_of[ids[row]]
            ids[row] = ""
        raw[drop] = _FREE
        self._free.extend(reversed(drop.tolist()))  # lowest rows reused first
        self._order = None
        self._id_array = None
        self.pruned += len(drop)
        return len(drop)

    def _new_row(self, item_id: str) -> int:
        if not self._free and len(self._row) >= self._prune_at:
            self.prune()
            self._prune_at = max(_PRUNE_MIN_ROWS, 2 * len(self._row))
        self._id_array = None
        if self._free:
            row = self._free.pop()
            self._ids[row] = item_id
            self._row[item_id] = row
            self._raw[row] = 0.0
            return row
        row = len(self._ids)
        self._ids.append(item_id)
        self._row[item_id] = row
        if row >= len(self._raw):
            self._raw = np.concatenate([self._raw, np.zeros(len(self._raw), np.float64)])
        return row

    def _rescale(self, scale: float) -> None:
        """Multiply every stored score by ``scale`` (the decay clock's anchor moved)."""
        self._raw *= scale
