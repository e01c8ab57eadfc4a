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
are forgotten first: a forgotten user's next event starts a new window). Measured with
tracemalloc (CPython 3.12, 50,000 users, window 20): a remembered user costs about 0.9 KiB with
one event in its window and 2.0 KiB with a full window of 20 (a deque, its pairs, the ordered
dict's entry and the user id string), so the worker's default of 150,000 users
(``STREAMREC_COVISIT_MAX_USERS``) holds at most about 300 MiB, the former hard-coded 1,000,000
about 2 GiB.

The item rows are bounded in total by ``max_pairs`` neighbour entries (a pair counts once per
direction; about 72 bytes each, measured the same way: the worker's default of 3,000,000,
``STREAMREC_COVISIT_MAX_PAIRS``, is about 210 MiB). Every row remembers the event that last
counted in it; when the entries exceed ``max_pairs`` the rows least recently counted in are
forgotten, oldest first, down to seven eighths of ``max_pairs`` (one sort of the rows, about
once every eighth of ``max_pairs`` new entries). Their counts had decayed the longest; an
evicted row's item starts afresh (its partners keep their side of the pair). The pause grows
with the entries freed and the rows scanned: on the loaded shared 2-core machine (load 4 to 6,
130,000 rows, Zipf items, window 20), evicting 750,000 entries (a quarter of 3M) took 1.0 s and
an eighth (375,000) 0.6 to 0.8 s, about 4 % of the time once saturated: one pause within a
batch, under ``max_poll_interval_ms`` (3 s). Counting itself slows as hot rows fill (their
per-row prunes), which is older than this bound.

Candidates for a user are the neighbours of the last ``recent`` items of the history, each
history item weighted by ``recency_decay ** age`` (age 0 = latest), scores summed.

Storage: every item seen gets an integer key (``key_of``, ``names``); a row is a slot per
neighbour key and two flat arrays (``array.array``: neighbour keys and weights, in the order the
neighbours arrived; a pruned row is rewritten best first). Counting costs what a dict update
costs, and reading a row as numpy arrays is a copy of contiguous memory: ``neighbor_arrays``,
and ``candidate_scores`` which sums the rows exactly as ``candidates`` does (the same additions
in the same order), unfiltered and unordered, for the ranker's array code.
"""

from __future__ import annotations

import heapq
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from streamrec.ranking.decay import DecayClock
from streamrec.ranking.trending import DEFAULT_EVENT_WEIGHTS


class CoVisitation:
    """Weighted co-occurrence counts of items within users' recent windows.

    Args:
        window: previous events of the same user each event is paired with.
        event_weights: weight per event type (unknown types count 1.0).
        max_neighbors: neighbours kept per item (see module docstring).
        max_users: users whose recent window is remembered.
        max_pairs: neighbour entries kept over all rows (None: only ``max_neighbors`` bounds
            them, per item).
        half_life_s: half-life of a pair's contribution in event-time seconds (None: no
            decay).
    """

    def __init__(
        self,
        window: int = 20,
        event_weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
        max_neighbors: int = 200,
        max_users: int = 150_000,
        half_life_s: float | None = None,
        max_pairs: int | None = None,
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
        if max_pairs is not None and max_pairs < 2 * max_neighbors:
            raise ValueError("max_pairs must be >= 2 * max_neighbors")
        self.max_pairs = max_pairs
        self.evicted_rows = 0  # rows forgotten to keep within max_pairs
        self.evicted_pairs = 0  # ... and their entries
        self.forgotten_users = 0  # user windows forgotten to keep within max_users
        self._entries = 0  # neighbour entries over all rows
        self._tick = 0  # events counted: each row's ``touched`` is one of them
        self._recent: OrderedDict[str, deque[tuple[int, float]]] = OrderedDict()
        self._rows: dict[int, _Row] = {}  # by item key
        self._key: dict[str, int] = {}  # item id -> integer key (never reused)
        self._names: list[str] = []  # integer key -> item id
        self._scratch = np.zeros(0, dtype=np.float64)  # per key, a sum (zero between calls)
        self._first = np.zeros(0, dtype=np.int64)  # per key, scratch for de-duplication
        # the weight of each pair the last ``observe`` counted (undecayed, ``paired``'s order)
        self.last_pair_weights: list[float] = []

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
                self.forgotten_users += 1
        else:
            self._recent.move_to_end(user_id)
        key = self.key_of(item_id)
        names = self._names
        paired = []
        weights = self.last_pair_weights = []
        for other, other_weight in recent:
            if other == key:
                continue
            pair = weight * other_weight * boost
            self._bump(key, other, pair)
            self._bump(other, key, pair)
            paired.append(names[other])
            weights.append(weight * other_weight)
        recent.append((key, weight))
        self._tick += 1
        if self.max_pairs is not None and self._entries > self.max_pairs:
            self._evict(self.max_pairs * 7 // 8)
        return paired

    def has_window(self, user_id: str) -> bool:
        """True when the user's recent window is remembered."""
        return user_id in self._recent

    def prime(self, user_id: str, item_id: str, event_type: str) -> None:
        """Append an event to the user's window without counting any pair (an event whose
        pairs were counted elsewhere: ``Ranker.restore``)."""
        recent = self._recent.get(user_id)
        if recent is None:
            recent = self._recent[user_id] = deque(maxlen=self.window)
            if len(self._recent) > self.max_users:
                self._recent.popitem(last=False)
                self.forgotten_users += 1
        else:
            self._recent.move_to_end(user_id)
        recent.append((self.key_of(item_id), self.event_weights.get(event_type, 1.0)))

    def add_pair(self, a: str, b: str, weight: float, ts_ms: float | None = None) -> None:
        """Add ``weight`` (its value at event time ``ts_ms``) to the pair in both directions, as
        if events had paired the items (a delta merged from another worker,
        ``streamrec.ranking.signals``); user windows are not touched."""
        if a == b:
            return
        boost = 1.0 if ts_ms is None else self._clock.boost(ts_ms)
        key_a, key_b = self.key_of(a), self.key_of(b)
        self._bump(key_a, key_b, weight * boost)
        self._bump(key_b, key_a, weight * boost)
        self._tick += 1
        if self.max_pairs is not None and self._entries > self.max_pairs:
            self._evict(self.max_pairs * 7 // 8)

    def _evict(self, target: int) -> None:
        """Forget the rows least recently counted in until at most ``target`` entries remain."""
        rows = self._rows
        keys = np.fromiter(rows.keys(), dtype=np.int64, count=len(rows))
        touched = np.fromiter((r.touched for r in rows.values()), np.int64, len(rows))
        sizes = np.fromiter((len(r.keys) for r in rows.values()), np.int64, len(rows))
        order = np.argsort(touched, kind="stable")
        excess = self._entries - target
        n = min(int(np.searchsorted(np.cumsum(sizes[order]), excess)) + 1, len(order))
        for key in keys[order[:n]].tolist():
            del rows[key]
        gone = int(sizes[order[:n]].sum())
        self._entries -= gone
        self.evicted_rows += n
        self.evicted_pairs += gone

    def neighbors(self, item_id: str) -> Mapping[str, float]:
        """Co-visitation weights (decayed to the latest event time) of ``item_id``."""
        row = self._row(item_id)
        if row is None:
            return {}
        factor = self._clock.factor()
        names = self._names
        weights = row.weights if factor == 1.0 else [w * factor for w in row.weights]
        return {names[other]: w for other, w in zip(row.keys, weights, strict=True)}

    def count(self, a: str, b: str) -> float:
        """The co-visitation weight of the pair (symmetric, decayed)."""
        row, b_key = self._row(a), self._key.get(b)
        slot = None if row is None or b_key is None else row.slot.get(b_key)
        weight = 0.0 if row is None or slot is None else row.weights[slot]
        return weight * self._clock.factor()

    def _row(self, item_id: str) -> _Row | None:
        key = self._key.get(item_id)
        return None if key is None else self._rows.get(key)

    def _rescale(self, scale: float) -> None:
        """Multiply every stored count by ``scale`` (the decay clock's anchor moved)."""
        for row in self._rows.values():
            row.weights = array("d", [w * scale for w in row.weights])

    @property
    def pairs(self) -> int:
        """Neighbour entries held over all rows (O(1))."""
        return self._entries

    @property
    def users(self) -> int:
        """User windows held (O(1))."""
        return len(self._recent)

    @property
    def names(self) -> Sequence[str]:
        """Item ids by integer key (``names[key_of(i)] == i``); grows, never reordered."""
        return self._names

    def key_of(self, item_id: str) -> int:
        """The integer key of an item (given on first sight)."""
        key = self._key.get(item_id)
        if key is None:
            key = self._key[item_id] = len(self._names)
            self._names.append(item_id)
        return key

    def neighbor_arrays(self, item_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The stored row of ``item_id`` as (neighbour keys int64, weights float64).

        The weights are the stored (rescaled, not decayed) values ``candidates`` sums, in the
        row's order (copies).
        """
        row = self._row(item_id)
        if row is None:
            return _EMPTY_KEYS, _EMPTY_WEIGHTS
        return np.array(row.keys, dtype=np.int64), np.array(row.weights, dtype=np.float64)

    def candidate_scores(
        self, history: Sequence[str], recent: int = 5, recency_decay: float = 0.7
    ) -> tuple[np.ndarray, np.ndarray]:
        """The summed neighbour scores ``candidates`` ranks, as (unique keys, scores) arrays.

        Unfiltered and unordered; each score is the same sum, in the same order, as
        ``candidates`` computes (0.0, then each row's part, latest history item first), so the
        values are identical.
        """
        tail = list(history[-recent:]) if recent > 0 else []
        rows = []
        for age, item in enumerate(reversed(tail)):
            row = self._row(item)
            if row is not None:
                keys = np.array(row.keys, dtype=np.int64)
                rows.append((keys, np.array(row.weights, dtype=np.float64), recency_decay**age))
        if not rows:
            return _EMPTY_KEYS, _EMPTY_WEIGHTS
        if len(rows) == 1:
            keys, weights, factor = rows[0]
            return keys, 0.0 + factor * weights
        if len(self._scratch) < len(self._names):
            self._scratch = np.zeros(2 * len(self._names), dtype=np.float64)
            self._first = np.zeros(2 * len(self._names), dtype=np.int64)
        scratch, first = self._scratch, self._first  # all zero between calls
        for keys, weights, factor in rows:  # keys are distinct within a row
            scratch[keys] += factor * weights
        every = np.concatenate([r[0] for r in rows])
        where = np.arange(len(every))
        first[every] = where  # one position of each key (whichever numpy writes last)
        unique = every[first[every] == where]
        scores = scratch[unique]
        scratch[unique] = 0.0
        return unique, scores

    def anchor(
        self, history: Sequence[str], item_id: str, recent: int = 5, recency_decay: float = 0.7
    ) -> str | None:
        """The history item whose row contributes most to ``item_id``'s candidate score (the
        same parts ``candidate_scores`` sums; ties to the latest), or None when none holds it.

        A dictionary lookup per recent history item: cheap enough for every shown item.
        """
        key = self._key.get(item_id)
        if key is None or recent <= 0:
            return None
        best, best_part = None, 0.0
        for age, item in enumerate(reversed(history[-recent:])):
            row = self._row(item)
            slot = None if row is None else row.slot.get(key)
            if slot is not None and row is not None:
                part = recency_decay**age * row.weights[slot]
                if part > best_part:
                    best, best_part = item, part
        return best

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
        scores: dict[int, float] = {}
        tail = list(history[-recent:]) if recent > 0 else []
        for age, item in enumerate(reversed(tail)):
            factor = recency_decay**age
            row = self._row(item)
            for other, weight in zip(row.keys, row.weights, strict=True) if row else ():
                scores[other] = scores.get(other, 0.0) + factor * weight
        names = self._names
        keep = [
            (item_id, score)
            for item_id, score in ((names[other], score) for other, score in scores.items())
            if not (exclude and item_id in exclude) and (available is None or available(item_id))
        ]
        return heapq.nsmallest(n, keep, key=lambda kv: (-kv[1], kv[0]))

    def _bump(self, a: int, b: int, weight: float) -> None:
        row = self._rows.get(a)
        if row is None:
            row = self._rows[a] = _Row()
        row.touched = self._tick
        slot = row.slot.get(b)
        if slot is not None:
            row.weights[slot] += weight
            return
        row.slot[b] = len(row.keys)
        row.keys.append(b)
        row.weights.append(0.0 + weight)
        self._entries += 1
        if len(row.keys) > 2 * self.max_neighbors:
            names, keys, weights = self._names, row.keys, row.weights
            best = sorted(range(len(keys)), key=lambda i: (-weights[i], names[keys[i]]))
            pruned = self._rows[a] = _Row(best[: self.max_neighbors], keys, weights)
            pruned.touched = self._tick
            self._entries -= len(keys) - len(pruned.keys)


class _Row:
    """One item's neighbours: keys and weights in arrival order, and each key's slot."""

    __slots__ = ("keys", "slot", "touched", "weights")

    def __init__(
        self, slots: Sequence[int] = (), keys: Sequence[int] = (), weights: Sequence[float] = ()
    ) -> None:
        self.keys = array("q", [keys[i] for i in slots])
        self.weights = array("d", [weights[i] for i in slots])
        self.slot = {key: n for n, key in enumerate(self.keys)}
        self.touched = 0  # the owner's event count when this row was last counted in


_EMPTY_KEYS = np.zeros(0, dtype=np.int64)
_EMPTY_WEIGHTS = np.zeros(0, dtype=np.float64)
