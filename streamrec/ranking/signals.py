"""Global trending and co-visitation: compact deltas of one worker's counts, merged by the others.

With N workers each counts only the events of the partitions it owns, so trending and
co-visitation would see 1/N of the traffic. Each worker therefore records what it counts as
*deltas* and publishes them (``streamrec.worker.signals``); every worker merges the deltas of
the others into its own in-memory copy. This module is the pure part: recording and merging,
no Kafka.

A delta describes the events of **one source partition in one offset range** ``[start, end)``:

* ``items``: per item, the sum of its trending weights, each decayed to the delta's reference
  event time ``ts_ms`` with the trending half-life (``weight * 2 ** ((ts - ts_ms) / half_life)``),
  so adding it at ``ts_ms`` (``Trending.add``) gives exactly what counting the events would;
* ``pairs``: per unordered item pair, the sum of its co-visitation weights, decayed to
  ``ts_ms`` with the co-visitation half-life (or plain sums without one).

**Idempotence** comes from the ranker's per-partition watermark (the next offset not yet
counted, ``Ranker.next_offset``), which local counting, restores from the database and merged
deltas all advance. A delta is applied only when it lies wholly past the watermark
(``start >= watermark``; the watermark moves to ``end``); a delta ending at or before it is a
duplicate (a replayed or re-delivered delta, one of the worker's own read back, or events the
worker counted itself); a delta that straddles it (``start < watermark < end``) cannot be split
and is skipped (``"overlap"``: those events are lost to this worker, never counted twice). A
recorder starts a new range whenever the watermark moved under it (a merged delta, a restore),
so ranges never straddle what another worker published in the normal course; overlaps arise
only from races around a partition move (a new owner restoring before reading the old owner's
last delta) and are counted in a metric.

**Bounded**: a delta keeps at most ``max_items`` trending items and ``max_pairs`` pairs, the
heaviest (the rest is dropped, as the co-visitation table drops its weakest neighbours).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

Outcome = Literal["applied", "duplicate", "overlap"]
OUTCOMES: tuple[Outcome, ...] = ("applied", "duplicate", "overlap")
_T = TypeVar("_T")
_MAX_EXPONENT = 200.0  # half-lives between a range's first event and a later one (2**200 is safe)


@dataclass(frozen=True)
class SignalDelta:
    """The counts of one source partition's events in ``[start, end)`` (module docstring).

    Attributes:
        source: the publishing worker (diagnostics only: idempotence never depends on it).
        partition: the input partition the events came from.
        start: the first offset covered.
        end: one past the last offset covered.
        ts_ms: the reference event time every weight is decayed to.
        items: (item id, trending weight at ``ts_ms``).
        pairs: (item a, item b, co-visitation weight at ``ts_ms``), ``a < b``.
        sent_at_s: wall-clock seconds when published (staleness; 0 when unknown).
    """

    source: str
    partition: int
    start: int
    end: int
    ts_ms: float
    items: tuple[tuple[str, float], ...] = ()
    pairs: tuple[tuple[str, str, float], ...] = ()
    sent_at_s: float = 0.0

    def __post_init__(self) -> None:
        if self.partition < 0 or not 0 <= self.start < self.end:
            raise ValueError(f"bad delta range {self.partition}:[{self.start}, {self.end})")


@dataclass
class _Open:
    """A range being recorded."""

    start: int
    end: int
    ts_ms: float | None = None  # the first counted event's time: what values are relative to
    last_ms: float | None = None  # the latest counted event's time: the delta's reference
    items: dict[str, float] = field(default_factory=dict)
    pairs: dict[tuple[str, str], float] = field(default_factory=dict)


class DeltaRecorder:
    """Records the events a worker counts, per source partition, as deltas to publish.

    Args:
        source: this worker's name (carried in each delta).
        trending_half_life_ms: the trending half-life (``Trending``).
        covisit_half_life_ms: the co-visitation half-life (None: no decay).
        max_items: trending items per delta at most (the heaviest kept).
        max_pairs: co-visitation pairs per delta at most (the heaviest kept).
    """

    def __init__(
        self,
        source: str,
        trending_half_life_ms: float,
        covisit_half_life_ms: float | None,
        max_items: int = 5000,
        max_pairs: int = 20000,
    ) -> None:
        if max_items < 1 or max_pairs < 0:
            raise ValueError("max_items must be >= 1 and max_pairs >= 0")
        self.source = source
        self.trending_half_life_ms = trending_half_life_ms
        self.covisit_half_life_ms = covisit_half_life_ms
        self.max_items = max_items
        self.max_pairs = max_pairs
        self.dropped = 0  # items and pairs left out of deltas by the caps
        self._open: dict[int, _Open] = {}
        self._closed: list[tuple[int, _Open]] = []

    def offset(self, partition: int, watermark: int, offset: int) -> None:
        """The ranker took ``offset`` of ``partition`` (its watermark was ``watermark``).

        A new range starts unless the open one ends exactly at the watermark (it moved under
        the range: a merged delta or a restore counted events this range must not span).
        """
        rng = self._open.get(partition)
        if rng is not None and rng.end != watermark:
            self.close(partition)
            rng = None
        if rng is None:
            rng = self._open[partition] = _Open(offset, offset + 1)
        rng.end = offset + 1

    def count(
        self,
        partition: int,
        item_id: str,
        weight: float,
        ts_ms: float,
        pairs: Iterable[tuple[str, float]],
    ) -> None:
        """Add one counted event (after ``offset``): its trending weight and its pairs."""
        rng = self._open[partition]
        if rng.ts_ms is None:
            rng.ts_ms = float(ts_ms)
        t_scale = _scale(ts_ms - rng.ts_ms, self.trending_half_life_ms)
        c_scale = _scale(ts_ms - rng.ts_ms, self.covisit_half_life_ms)
        if t_scale is None or c_scale is None:  # far past the reference: a new range
            first = rng.end - 1
            rng.end = first  # the range so far ends before this event (start < first here)
            self.close(partition)
            rng = self._open[partition] = _Open(first, first + 1, float(ts_ms), float(ts_ms))
            t_scale = c_scale = 1.0
        rng.last_ms = max(rng.last_ms or ts_ms, ts_ms)
        items = rng.items
        items[item_id] = items.get(item_id, 0.0) + weight * t_scale
        table = rng.pairs
        for other, value in pairs:
            key = (item_id, other) if item_id < other else (other, item_id)
            table[key] = table.get(key, 0.0) + value * c_scale

    def close(self, partition: int) -> None:
        """End the open range of ``partition`` (it is published by the next ``take``)."""
        rng = self._open.pop(partition, None)
        if rng is not None:
            self._closed.append((partition, rng))

    def take(self, sent_at_s: float = 0.0) -> list[SignalDelta]:
        """Close every range and return the deltas (ranges without counted events are sent
        too: they move the others' watermarks past events that count nothing)."""
        for partition in list(self._open):
            self.close(partition)
        closed, self._closed = self._closed, []
        return [self._delta(partition, rng, sent_at_s) for partition, rng in closed]

    @property
    def pending(self) -> int:
        """Ranges recorded and not taken yet."""
        return len(self._open) + len(self._closed)

    def _delta(self, partition: int, rng: _Open, sent_at_s: float) -> SignalDelta:
        """The range's delta, its values moved to the latest event time (so that merging
        it moves the receiver's decay clock as far as counting the events would)."""
        first = rng.ts_ms if rng.ts_ms is not None else 0.0
        last = rng.last_ms if rng.last_ms is not None else first
        t_down = _scale(first - last, self.trending_half_life_ms) or 0.0
        c_down = _scale(first - last, self.covisit_half_life_ms) or 0.0
        items = _heaviest(rng.items.items(), self.max_items, lambda kv: kv[1])
        pairs = _heaviest(
            ((a, b, v) for (a, b), v in rng.pairs.items()), self.max_pairs, lambda p: p[2]
        )
        self.dropped += len(rng.items) - len(items) + len(rng.pairs) - len(pairs)
        return SignalDelta(
            self.source,
            partition,
            rng.start,
            rng.end,
            last,
            tuple((i, v * t_down) for i, v in items),
            tuple((a, b, v * c_down) for a, b, v in pairs),
            sent_at_s,
        )


def classify(watermark: int, delta: SignalDelta) -> Outcome:
    """What to do with ``delta`` given the partition's watermark (module docstring)."""
    if delta.end <= watermark:
        return "duplicate"
    if delta.start < watermark:
        return "overlap"
    return "applied"


def _scale(dt_ms: float, half_life_ms: float | None) -> float | None:
    """``2 ** (dt / half_life)``; None when the exponent is too large to add safely."""
    if half_life_ms is None:
        return 1.0
    exponent = dt_ms / half_life_ms
    if exponent > _MAX_EXPONENT:
        return None
    return math.pow(2.0, exponent)


def _heaviest(entries: Iterable[_T], n: int, weight: Callable[[_T], float]) -> list[_T]:
    """The ``n`` entries of largest weight (all of them when there are no more)."""
    listed = list(entries)
    if len(listed) <= n:
        return listed
    return heapq.nlargest(n, listed, key=weight)
