"""Publishing the outbox on its own thread: the poll thread never waits on the output broker.

After a batch commits, the poll thread hands its outbox rows to ``OutboxRelay.submit`` and goes
on polling. The relay thread sends them asynchronously; the producer's delivery callbacks only
record the outcome, and the relay thread deletes the delivered rows in bulk. A row whose send
fails stays in the outbox and in memory, and is sent again after a backoff. When partitions are
claimed the relay also reads the outbox table back (rows that a crash, a stop during an output
outage or a previous owner left) and sends what is not already on its way. A re-sent row
carries the same ``rec_id``: output is at least once, never lost, and state stays exactly once
(it was committed before the row was handed over).

The backlog (rows handed over or read back, not yet deleted) is bounded by the poll thread:
``Worker`` pauses consumption while it is at ``outbox_max_pending`` and ``/readyz`` says so.
The ``outbox_pending`` gauge is the outbox table's row count (every partition, rows that another
or a dead worker left included), counted by the relay thread every ``OUTBOX_COUNT_INTERVAL_S``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from kafka.errors import KafkaError, MessageSizeTooLargeError

from streamrec.errors import StoreError
from streamrec.io.clients import OutputProducer
from streamrec.io.codec import HEADER_ERROR, HEADER_TOPIC
from streamrec.ops.backoff import Backoff
from streamrec.ops.metrics import Metrics
from streamrec.ops.settings import Settings
from streamrec.state.batch import OutboxMessage
from streamrec.state.store import Store
from streamrec.worker.health import Health

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.05  # the relay thread wakes at least this often
RESYNC_PAGE = 1000  # outbox rows read back per page
RESYNC_MAX_PAGES = 20  # pages read back per relay iteration (the rest next time)
OUTBOX_COUNT_INTERVAL_S = 5.0  # the outbox table is counted for the gauge this often


class OutboxRelay:
    """Sends outbox rows from its own thread and deletes the delivered ones.

    Args:
        settings: topics, size limit, timeouts.
        store: where the outbox lives (its engine is shared with the poll thread).
        metrics: published counts, latency, pending rows, errors.
        health: told about output failures.
        owned: the partitions whose outbox rows this worker may relay (read on the relay thread).
        clock: seconds since the epoch (event-to-recommendation latency).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        metrics: Metrics,
        health: Health,
        owned: Callable[[], Iterable[int]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.health = health
        self.owned = owned
        self.clock = clock
        self.producer: OutputProducer | None = None
        self.backoff = Backoff()
        self._inbox: deque[OutboxMessage] = deque()
        self._retry: deque[OutboxMessage] = deque()  # failed sends, sent again after a backoff
        self._in_flight: dict[int, float] = {}  # stored row id -> monotonic send time
        self._unstored_in_flight = 0  # catalog dead letters (no outbox row)
        self._done: deque[tuple[OutboxMessage, BaseException | None]] = deque()  # callbacks
        self._to_delete: list[int] = []
        self._resync_wanted = False
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._drain_until = 0.0
        self._counted_at = -OUTBOX_COUNT_INTERVAL_S

    # -- the poll thread's side ----------------------------------------------------------------
    def start(self, producer: OutputProducer) -> None:
        """Start the relay thread with this producer."""
        self.producer = producer
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()

    def submit(self, messages: Sequence[OutboxMessage]) -> None:
        """Hand committed outbox rows (or unstored dead letters, ``id`` None) to the relay."""
        if messages:
            self._inbox.extend(messages)
            self._wake.set()

    def resync(self) -> None:
        """Read the outbox table again (partitions claimed, database back, a crash's rows)."""
        self._resync_wanted = True
        self.backoff.reset()
        self._wake.set()

    def backlog(self) -> int:
        """Rows handed over or read back and not yet delivered and deleted."""
        return len(self._inbox) + len(self._retry) + len(self._in_flight) + self._unstored_in_flight

    def oldest_unacked_s(self) -> float:
        """Seconds the oldest in-flight row has waited for its ack (0 when none waits)."""
        sent = list(self._in_flight.values())
        return time.monotonic() - min(sent) if sent else 0.0

    def stop(self, drain_timeout_s: float) -> None:
        """Deliver what can be delivered within ``drain_timeout_s``, then stop the thread."""
        self._drain_until = time.monotonic() + drain_timeout_s
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(drain_timeout_s + 1.0)
            if self._thread.is_alive():
                log.warning("outbox relay still sending at shutdown; the outbox keeps the rest")

    # -- the relay thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(IDLE_WAIT_S)
            self._wake.clear()
            try:
                self._settle()
                if self._stopping.is_set() and self._drained():
                    break
                if not self.backoff.pending or self._due():
                    self._send_queued()
                    if self._resync_wanted:
                        self._read_back()
            except Exception:  # never let the thread die: the outbox keeps every row
                log.exception("outbox relay iteration failed; retrying")
                self.backoff.fail(time.monotonic())
            self._count_table()
        self._settle()
        self._count_table(force=True)

    def _count_table(self, force: bool = False) -> None:
        """The backlog gauge from the outbox table itself, every ``OUTBOX_COUNT_INTERVAL_S``."""
        now = time.monotonic()
        if not force and now - self._counted_at < OUTBOX_COUNT_INTERVAL_S:
            return
        self._counted_at = now
        try:
            self.metrics.outbox_pending.set(self.store.count_outbox())
        except StoreError as exc:  # the gauge keeps its last value; the poll thread reports
            log.warning("outbox backlog not counted: %s", exc)

    def _due(self) -> bool:
        return self.backoff.due(time.monotonic())

    def _drained(self) -> bool:
        if time.monotonic() >= self._drain_until:
            return True
        return self.backlog() == 0

    def _send_queued(self) -> None:
        """Send the failed rows again, then the new ones, until a send fails."""
        for queue in (self._retry, self._inbox):
            while queue:
                if not self._send(queue.popleft()):
                    return

    def _send(self, msg: OutboxMessage) -> bool:
        """Send one record asynchronously; False when the producer refused it at once."""
        assert self.producer is not None
        if msg.id is not None:
            self._in_flight[msg.id] = time.monotonic()
        else:
            self._unstored_in_flight += 1
        try:
            future = self.producer.send(
                msg.topic, key=msg.key, value=msg.value, headers=list(msg.headers)
            )
        except KafkaError as exc:  # too large for the client, or no metadata in max_block_ms
            self._done.append((msg, exc))
            return isinstance(exc, MessageSizeTooLargeError)
        future.add_callback(lambda _md, m=msg: self._done.append((m, None)))
        future.add_errback(lambda exc, m=msg: self._done.append((m, exc)))
        return True

    def _settle(self) -> None:
        """Account for delivered and failed sends; delete delivered rows in bulk."""
        failed = False
        while self._done:
            msg, exc = self._done.popleft()
            if exc is None:
                self._delivered(msg)
            elif isinstance(exc, MessageSizeTooLargeError):
                self._too_large(msg)
            else:
                self._forget(msg)
                self._retry.append(msg)
                failed = True
                self.metrics.errors.labels(component="broker").inc()
                self.health.output_failed(type(exc).__name__)
        if failed:  # kept in the outbox and in memory: sent again after a backoff
            wait = self.backoff.fail(time.monotonic())
            log.warning("publishing failed; %d records wait, retry in %.1fs", self.backlog(), wait)
        if self._to_delete:
            try:
                self.store.delete_outbox(self._to_delete)
            except StoreError as exc:
                log.warning("outbox not cleared yet (retrying): %s", exc)
                return
            for row in self._to_delete:
                self._in_flight.pop(row, None)
            self._to_delete = []

    def _delivered(self, msg: OutboxMessage) -> None:
        self.health.output_ok()
        if self.backoff.pending and not self._retry:
            self.backoff.reset()
        self._count_published(msg)
        if msg.id is None:
            self._unstored_in_flight -= 1
        else:
            self._to_delete.append(msg.id)  # leaves _in_flight once deleted

    def _forget(self, msg: OutboxMessage) -> None:
        if msg.id is None:
            self._unstored_in_flight -= 1
        else:
            self._in_flight.pop(msg.id, None)

    def _too_large(self, msg: OutboxMessage) -> None:
        """A dead letter (which carries the input record) too large for the broker is sent cut
        to ``max_event_bytes`` and flagged; anything else that large can never be published."""
        truncated = any(k == _TRUNCATED[0][0] for k, _ in msg.headers)
        if msg.topic == self.settings.dlq_topic and not truncated:
            self._forget(msg)
            value = (msg.value or b"")[: self.settings.max_event_bytes]
            self._send(replace(msg, value=value, headers=(*msg.headers, *_TRUNCATED)))
            return
        log.error(
            "record for %s refused as too large (%d bytes); dropped from the outbox",
            msg.topic,
            len(msg.value or b""),
        )
        self.metrics.errors.labels(component="broker").inc()
        self._forget(msg)
        if msg.id is not None:
            self._to_delete.append(msg.id)

    def _read_back(self) -> None:
        """Send the outbox rows of owned partitions that are not in flight yet."""
        partitions = list(self.owned())
        waiting = {m.id for m in list(self._inbox)} | {m.id for m in list(self._retry)}
        after = 0
        for _ in range(RESYNC_MAX_PAGES):
            try:
                rows = self.store.pending_outbox(partitions, RESYNC_PAGE, after_id=after)
            except StoreError as exc:
                log.warning("outbox read-back skipped (retrying): %s", exc)
                self.backoff.fail(time.monotonic())
                return
            fresh = [m for m in rows if m.id not in self._in_flight and m.id not in waiting]
            if fresh:
                log.info("relaying %d outbox messages", len(fresh))
            for msg in fresh:
                self._send(msg)
            if len(rows) < RESYNC_PAGE:
                self._resync_wanted = False
                return
            after = rows[-1].id or after

    def _count_published(self, msg: OutboxMessage) -> None:
        if msg.topic == self.settings.recs_topic:
            self.metrics.recommendations_published.inc()
            if msg.event_ts_ms > 0:
                self.metrics.event_to_rec_seconds.observe(
                    max(0.0, self.clock() - msg.event_ts_ms / 1000.0)
                )
        else:
            headers = dict(msg.headers)
            reason = headers.get(HEADER_ERROR, b"unknown").decode()
            source = headers.get(HEADER_TOPIC, b"").decode()
            topic = source if source == self.settings.items_topic else self.settings.events_topic
            self.metrics.dead_letters.labels(reason=reason, topic=topic).inc()


_TRUNCATED = (("x-streamrec-truncated", b"true"),)
