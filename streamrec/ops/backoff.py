"""The one exponential backoff: how long to wait before the next retry of a failing call.

The worker retries two things that fail for a while and then come back (the database and the
output broker); both wait 0.5 s, then 1 s, 2 s, ... up to ``max_s``, and start over once a call
succeeds. The clock is passed in (monotonic seconds), so the helper stays pure.
"""

from __future__ import annotations


class Backoff:
    """Exponential backoff with a retry time.

    Args:
        initial_s: the first wait.
        max_s: the longest wait.
        factor: growth of the wait after each failure.

    A failure (``fail``) schedules a retry ``delay_s`` after ``now`` and grows the wait; ``due``
    says whether a scheduled retry's time has come; ``reset`` forgets the failures.
    """

    def __init__(self, initial_s: float = 0.5, max_s: float = 5.0, factor: float = 2.0) -> None:
        if initial_s <= 0 or max_s < initial_s or factor < 1:
            raise ValueError(
                f"need 0 < initial_s <= max_s and factor >= 1, got {initial_s}, {max_s}, {factor}"
            )
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self.delay_s = initial_s
        self.retry_at: float | None = None

    def fail(self, now: float) -> float:
        """Record a failure at ``now``; returns the wait before the retry (then grows it)."""
        wait = self.delay_s
        self.retry_at = now + wait
        self.delay_s = min(self.max_s, self.delay_s * self.factor)
        return wait

    def due(self, now: float) -> bool:
        """True when a retry is scheduled and its time has come."""
        return self.retry_at is not None and now >= self.retry_at

    @property
    def pending(self) -> bool:
        """True while a retry is scheduled (a failure not yet followed by ``reset``)."""
        return self.retry_at is not None

    def reset(self) -> None:
        """A call succeeded: no retry pending, the next failure waits ``initial_s`` again."""
        self.delay_s = self.initial_s
        self.retry_at = None
