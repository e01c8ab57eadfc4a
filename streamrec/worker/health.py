"""Readiness: is the database reachable, is the broker reachable, do we own partitions?

The loop reports what it sees (a failed database call, a failed poll or send, acks that do not
come); ``/readyz`` asks ``ready``. The broker counts as lost once the consumer has had no
connection, or a publish has waited for acks, for ``broker_unready_after_ms``; it counts as back
only once the link has held that long again (no flapping on reconnects).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Health:
    """The worker's view of its dependencies.

    Args:
        unready_after_s: how long the broker must be unreachable (or back) before it counts.
        on_broker_failure: called on each broker failure (a metric).
    """

    def __init__(self, unready_after_s: float, on_broker_failure: Callable[[], object]) -> None:
        self.unready_after_s = unready_after_s
        self.on_broker_failure = on_broker_failure
        self.db_ok = True
        self.broker_ok = True
        self.acks_waiting_since: float | None = None  # set while a publish waits for acks
        self._broker_lost_at: float | None = None
        self._broker_failed_at = 0.0

    def broker_failed(self, what: str) -> None:
        """A call to the broker failed (kafka-python keeps retrying by itself)."""
        if self.broker_ok:
            log.warning("broker unreachable (%s); kafka-python keeps retrying", what)
        self.broker_ok = False
        self._broker_failed_at = time.monotonic()
        self.on_broker_failure()

    def check_broker(self, connected: bool) -> None:
        """Not ready once the consumer has had no broker connection for a while."""
        now = time.monotonic()
        if connected:
            self._broker_lost_at = None
            if not self.broker_ok and now - self._broker_failed_at >= self.unready_after_s:
                log.info("broker reachable again")
                self.broker_ok = True
            return
        if self._broker_lost_at is None:
            self._broker_lost_at = now
        elif now - self._broker_lost_at >= self.unready_after_s and self.broker_ok:
            self.broker_failed(f"no connection for {self.unready_after_s:.0f} s")

    def ready(
        self, connected: Callable[[], bool] | None, partitions: int, model_version: str
    ) -> tuple[bool, str]:
        """Readiness for /readyz: database and broker reachable, partitions assigned.

        Args:
            connected: whether the consumer has a broker connection (None before it exists).
            partitions: partitions owned.
            model_version: the served model, for the message.
        """
        if not self.db_ok:
            return False, "database unreachable"
        waiting = self.acks_waiting_since
        if waiting is not None and time.monotonic() - waiting >= self.unready_after_s:
            if self.broker_ok:  # count the transition, not every probe
                # the loop sits in a flush: the consumer's view of its connections is stale
                self.broker_failed("acks pending")
        elif connected is not None:
            self.check_broker(connected())
        if not self.broker_ok:
            return False, "broker unreachable"
        if not partitions:
            return False, "no partitions assigned"
        return True, f"ready: {partitions} partitions, model {model_version}"
