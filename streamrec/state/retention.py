"""The retention window of ``applied_events``: old dedupe rows are deleted in small chunks.

Every applied event keeps a row (its id is the dedupe key) stamped with the time it was
committed. Rows older than ``applied_events_retention_hours`` are deleted, a chunk of at most
``applied_events_prune_rows`` per call, by the poll loop between batches: one short ``DELETE``
(an index range scan), so the loop keeps its deadline. While chunks come back full the next
call prunes again (catching up after an upgrade or an outage); otherwise it waits
``PRUNE_INTERVAL_S``.

Dedupe holds inside the window: an event id re-delivered less than the window after it was
applied is found and skipped. Past the window it would be applied again, which is why the
window must be longer than the broker's retention of the input topic (a record can only be
re-read, after an offset reset, while the broker still has it; and it was written before it
was applied).

Measured on the shared 2-core development machine (``tests/contract/test_retention.py``
prints it): deleting a chunk of 5,000 expired rows out of 50,000 takes about 60 ms on SQLite
and 30 ms on PostgreSQL, a fiftieth of the tests' ``max_poll_interval_ms`` of 3,000.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 60.0  # between prunes that found nothing more to delete


class PrunableStore(Protocol):
    """The store call a retention needs (``streamrec.state.Store``)."""

    def prune_applied_events(self, before_ms: int, limit: int) -> int: ...


class AppliedEventsRetention:
    """Deletes applied events older than the window, one bounded chunk per ``step``.

    Args:
        store: the database.
        retention_hours: the window (> 0).
        chunk_rows: rows deleted per ``step`` at most.
        clock: seconds since the epoch (the store's clock: rows are stamped with it).
        interval_s: wait between prunes once a chunk came back short.
        on_pruned: called with the number of rows each chunk deleted (a metric).
    """

    def __init__(
        self,
        store: PrunableStore,
        retention_hours: float,
        chunk_rows: int,
        clock: Callable[[], float] = time.time,
        interval_s: float = PRUNE_INTERVAL_S,
        on_pruned: Callable[[int], object] = lambda n: None,
    ) -> None:
        if retention_hours <= 0 or chunk_rows < 1:
            raise ValueError("retention_hours must be > 0 and chunk_rows >= 1")
        self.store = store
        self.retention_ms = int(retention_hours * 3_600_000)
        self.chunk_rows = chunk_rows
        self.clock = clock
        self.interval_s = interval_s
        self.on_pruned = on_pruned
        self._due = 0.0  # monotonic time of the next prune

    def step(self) -> int:
        """Delete one chunk if a prune is due; the number of rows deleted.

        Raises:
            StoreError: the database failed (the next prune is due after ``interval_s``).
        """
        now = time.monotonic()
        if now < self._due:
            return 0
        self._due = now + self.interval_s
        before_ms = int(self.clock() * 1000) - self.retention_ms
        deleted = self.store.prune_applied_events(before_ms, self.chunk_rows)
        if deleted:
            self.on_pruned(deleted)
            log.debug("pruned %d applied events older than the retention window", deleted)
        if deleted >= self.chunk_rows:
            self._due = now  # more are due: go on at the next loop iteration
        return deleted
