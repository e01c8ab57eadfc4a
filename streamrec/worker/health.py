"""Readiness: is the database reachable, are the brokers reachable, do we own partitions?

The loop and the outbox relay report what they see (a failed database call, a failed poll, a
failed send, acks that do not come); ``/readyz`` asks ``ready``. The input broker counts as lost
once the consumer has had no connection for ``broker_unready_after_ms``, and as back only once
the link has held that long again (no flapping on reconnects). The output counts as lost while
a record has waited that long for its ack, or sends fail with no delivery since.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

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
        self._output_failed: str | None = None  # why sends fail, until the next delivery
        self.missing_topics: list[str] = []  # output topics that do not exist
        self._broker_lost_at: float | None = None
        self._broker_failed_at = 0.0

    def broker_failed(self, what: str) -> None:
        """A call to the broker failed (kafka-python keeps retrying by itself)."""
        if self.broker_ok:
            log.warning("broker unreachable (%s); kafka-python keeps retrying", what)
        self.broker_ok = False
        self._broker_failed_at = time.monotonic()
        self.on_broker_failure()

    def output_failed(self, what: str) -> None:
        """A send to the output broker failed (called from the relay thread)."""
        if self._output_failed is None:
            log.warning("output broker unreachable (%s); records wait in the outbox", what)
        self._output_failed = what

    def output_ok(self) -> None:
        """A record was delivered (called from the relay thread)."""
        if self._output_failed is not None:
            log.info("output broker reachable again")
        self._output_failed = None

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
        self,
        connected: Callable[[], bool] | None,
        partitions: int,
        model_version: str,
        output: OutputView,
    ) -> tuple[bool, str]:
        """Readiness for /readyz: database and brokers reachable, partitions assigned.

        Args:
            connected: whether the consumer has a broker connection (None before it exists).
            partitions: partitions owned.
            model_version: the served model, for the message.
            output: the outbox relay's backlog and whether consumption waits for it.
        """
        if not self.db_ok:
            return False, "database unreachable"
        if connected is not None:
            self.check_broker(connected())
        if not self.broker_ok:
            return False, "broker unreachable"
        backlog = output.backlog
        if self.missing_topics:
            names = ", ".join(self.missing_topics)
            return False, f"output topic missing: {names} (create it: streamrec topics)"
        if self._output_failed is not None or output.oldest_unacked_s >= self.unready_after_s:
            return False, f"output unreachable: {backlog} records wait in the outbox"
        if output.paused:
            return False, f"output backlog of {backlog} records: consumption paused"
        if not partitions:
            return False, "no partitions assigned"
        return True, f"ready: {partitions} partitions, model {model_version}, backlog {backlog}"


@dataclass(frozen=True)
class OutputView:
    """What readiness needs to know of the output side."""

    backlog: int
    oldest_unacked_s: float
    paused: bool
