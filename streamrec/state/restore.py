"""Restore the fused ranker's stream state from the database when partitions are claimed.

Trending and co-visitation live in memory (``streamrec.ranking.ranker``). When the worker claims a
partition it reads that partition's latest applied events back from the database
(``Store.recent_events``: at most ``stream_state_restore_events``, only offsets the ranker
has not observed yet) and feeds them to ``Ranker.restore``. Every applied event is thus
counted once per worker, after a restart as after a rebalance that gives a partition back.

The work is sliced so that the poll loop keeps polling (the group evicts a worker that does not
poll within ``max_poll_interval_ms``): each ``step`` reads at most one partition from the
database and observes chunks of ``CHUNK_EVENTS`` until ``BUDGET_S`` has passed. The worker keeps
the claimed partitions paused until ``step`` reports every pending restore finished: per user,
live events come after the restored ones, and since trending and co-visitation mix all
partitions, the first lists served after a claim already see every restored partition. Each
restored partition is logged once (count and seconds; at DEBUG when there was nothing to restore,
as after most rebalances).

``CHUNK_EVENTS`` is sized from measurements on the shared 2-core development machine
(2,000 items, 5,000 users, 50,000 events): ``Ranker.restore`` counts about 150,000 to
230,000 events/s when every item is known to the model, and about 17,000 events/s when 5 % of
the events are on new items (their vectors are written at the end of each chunk; ``observe``
writes them after every event: about 6,000 events/s). A chunk takes 20 to 150 ms; reading
50,000 applied events takes about 0.25 to 0.3 s on SQLite and PostgreSQL; the longest step
measured was 0.36 s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from streamrec.core.events import Event
from streamrec.ops.settings import Settings

log = logging.getLogger(__name__)

CHUNK_EVENTS = 2000
BUDGET_S = 0.25  # restore time per loop iteration (plus at most one chunk and one read)


class RecentEvents(Protocol):
    """The store read a restore needs (``streamrec.state.Store``)."""

    def recent_events(
        self, partition: int, from_offset: int, limit: int
    ) -> list[tuple[int, Event]]: ...


class StreamState(Protocol):
    """What a restore feeds (``streamrec.ranking.ranker.Ranker``): counts once per offset."""

    def next_offset(self, partition: int) -> int: ...

    def restore(self, partition: int, events: Sequence[tuple[int, Event]]) -> int: ...


@dataclass
class _Job:
    started: float
    events: Sequence[tuple[int, Event]] | None = None  # None until read from the store
    done: int = 0  # events of ``events`` passed to the ranker
    counted: int = 0


class StateRestore:
    """Pending restores of claimed partitions, worked off a slice at a time.

    Args:
        store: where applied events are read from.
        ranker: the ranker to restore.
        limit: events per partition at most (the latest ones).
        on_counted: called with the number of events counted after each chunk (a metric).
        chunk_events: events per ``Ranker.restore`` call.
        budget_s: restore time per ``step``.
        prime_windows: read the latest ``limit`` events even below the ranker's watermark
            (with global signals the counts of a moved partition came from the previous owner's
            deltas; the events below the watermark then only fill the users' co-visitation
            windows, ``Ranker.restore``).
    """

    def __init__(
        self,
        store: RecentEvents,
        ranker: StreamState,
        limit: int,
        on_counted: Callable[[int], object] = lambda n: None,
        chunk_events: int = CHUNK_EVENTS,
        budget_s: float = BUDGET_S,
        prime_windows: bool = False,
    ) -> None:
        if limit < 1 or chunk_events < 1:
            raise ValueError("limit and chunk_events must be >= 1")
        self.store = store
        self.ranker = ranker
        self.limit = limit
        self.on_counted = on_counted
        self.chunk_events = chunk_events
        self.budget_s = budget_s
        self.prime_windows = prime_windows
        self._jobs: dict[int, _Job] = {}
        self._restored: set[int] = set()  # finished, waiting for the other pending ones

    @property
    def pending(self) -> set[int]:
        """Partitions to keep paused: restores not finished, or finished but not released."""
        return set(self._jobs) | self._restored

    def add(self, partitions: Iterable[int]) -> None:
        """Restore these partitions (claimed just now); a pending one starts over."""
        now = time.monotonic()
        for p in partitions:
            self._jobs[p] = _Job(started=now)

    def discard(self, partitions: Iterable[int]) -> None:
        """Stop restoring these partitions (revoked); what was counted stays counted."""
        for p in partitions:
            self._jobs.pop(p, None)
            self._restored.discard(p)

    def step(self) -> list[int]:
        """Do up to ``budget_s`` of restore work.

        A step always does one unit of work (one database read or one chunk), then goes on
        while the budget lasts; it reads at most one partition from the database.

        Returns:
            the partitions to resume: every restored one once no restore is pending, else none.

        Raises:
            StoreError: the database failed; the partition's restore is retried by a later step.
        """
        start = time.monotonic()
        worked = read = False
        for p in sorted(self._jobs):
            job = self._jobs[p]
            if job.events is None:
                if read or (worked and time.monotonic() - start >= self.budget_s):
                    break
                first = 0 if self.prime_windows else self.ranker.next_offset(p)
                job.events = self.store.recent_events(p, first, self.limit)
                worked = read = True
            while job.done < len(job.events):
                if worked and time.monotonic() - start >= self.budget_s:
                    return []
                chunk = job.events[job.done : job.done + self.chunk_events]
                counted = self.ranker.restore(p, chunk)
                job.done += len(chunk)
                job.counted += counted
                self.on_counted(counted)
                worked = True
            del self._jobs[p]
            self._restored.add(p)
            log.log(
                logging.INFO if job.counted else logging.DEBUG,
                "stream state of partition %d restored: %d events in %.2f s",
                p,
                job.counted,
                time.monotonic() - job.started,
            )
        if self._jobs:
            return []
        released, self._restored = sorted(self._restored), set()
        return released


def make_state_restore(
    settings: Settings,
    store: RecentEvents,
    ranker: StreamState | None,
    on_counted: Callable[[int], object] = lambda n: None,
) -> StateRestore | None:
    """The worker's restore; None with encoder ranking or ``stream_state_restore_events=0``."""
    if ranker is None or settings.stream_state_restore_events == 0:
        return None
    limit = settings.stream_state_restore_events
    return StateRestore(
        store, ranker, limit, on_counted, prime_windows=bool(settings.signals_topic)
    )
