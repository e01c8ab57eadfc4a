"""Publishing the outbox: recommendations and dead letters, each deleted once the broker acked it.

Step 5 of the loop publishes a batch's committed outbox rows; rows that were not acked (the
output broker is slow or away, or a crash came between commit and publish) stay in the outbox
and are relayed later with backoff, and on every claim of partitions. A re-sent row carries the
same ``rec_id``: output is at least once, never lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from streamrec.errors import StoreError
from streamrec.io.codec import HEADER_ERROR
from streamrec.ops.backoff import Backoff
from streamrec.ops.metrics import Metrics
from streamrec.ops.settings import Settings
from streamrec.state.batch import OutboxMessage
from streamrec.state.store import Store
from streamrec.worker.health import Health

log = logging.getLogger(__name__)


class OutboxRelay:
    """Sends outbox rows, waits for acks, deletes the acked rows.

    Args:
        settings: topics, size limit.
        store: where the outbox lives.
        metrics: published counts, latency, pending rows, errors.
        health: told about broker failures and about acks being awaited.
        clock: seconds since the epoch (event-to-recommendation latency).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        metrics: Metrics,
        health: Health,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.health = health
        self.clock = clock
        self.producer: KafkaProducer | None = None
        self.backoff = Backoff()

    def due(self) -> bool:
        """True when left-over rows wait and their retry time has come."""
        return self.backoff.due(time.monotonic())

    def retry_later(self) -> None:
        """Schedule the next relay of left-over rows (backoff)."""
        self.backoff.fail(time.monotonic())

    def relay(self, partitions: Sequence[int], timeout_s: float) -> bool:
        """Publish the rows left in the outbox for ``partitions``; True when it is empty."""
        while True:
            try:
                pending = self.store.pending_outbox(partitions=list(partitions))
            except StoreError as exc:
                log.warning("outbox relay skipped: %s", exc)
                self.retry_later()
                return False
            if not pending:
                self.backoff.reset()
                return True
            log.info("relaying %d outbox messages", len(pending))
            if not self.publish(pending, timeout_s):
                self.retry_later()
                return False

    def publish(self, messages: Sequence[OutboxMessage], timeout_s: float) -> bool:
        """Send, wait for acks, delete the acked rows; True when every message was acked.

        Messages not acked stay in the outbox; a later relay sends them again (same rec_id).
        """
        assert self.producer is not None
        sent = []
        acked: list[int] = []
        for msg in messages:
            try:
                fut = self.producer.send(
                    msg.topic, key=msg.key, value=msg.value, headers=list(msg.headers)
                )
            except MessageSizeTooLargeError:  # refused by the client's own size check
                if self._send_truncated(msg):
                    acked.append(msg.id or 0)
                continue
            except KafkaError as exc:  # no metadata within max_block_ms: broker unreachable
                self.health.broker_failed(f"send: {type(exc).__name__}")
                break
            sent.append((msg, fut))
        self.health.acks_waiting_since = time.monotonic()
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            self.health.broker_failed("acks not received in time")
        finally:
            self.health.acks_waiting_since = None
        for msg, fut in sent:
            if not fut.is_done:
                continue
            try:
                fut.get(timeout=0)
            except MessageSizeTooLargeError:  # refused by the broker
                if self._send_truncated(msg):
                    acked.append(msg.id or 0)
                continue
            except KafkaError as exc:
                log.warning("publish failed, kept in outbox: %s", type(exc).__name__)
                self.metrics.errors.labels(component="broker").inc()
                continue
            acked.append(msg.id or 0)
            self._count_published(msg)
        self.metrics.outbox_pending.set(len(messages) - len(acked))
        try:
            self.store.delete_outbox([i for i in acked if i])
        except StoreError as exc:
            log.warning("outbox not cleared (messages may be re-sent): %s", exc)
            return False
        return len(acked) == len(messages)

    def _send_truncated(self, msg: OutboxMessage) -> bool:
        """Publish an oversized dead letter cut to max_event_bytes; False for other topics
        (only a dead letter, which carries the input record, can be this large)."""
        assert self.producer is not None
        if msg.topic != self.settings.dlq_topic:
            return False
        value = (msg.value or b"")[: self.settings.max_event_bytes]
        headers = [*list(msg.headers), ("x-streamrec-truncated", b"true")]
        try:
            self.producer.send(msg.topic, key=msg.key, value=value, headers=headers).get(timeout=30)
        except KafkaError as exc:
            log.warning("dead letter not published: %s", type(exc).__name__)
            return False
        self._count_published(msg)
        return True

    def _count_published(self, msg: OutboxMessage) -> None:
        if msg.topic == self.settings.recs_topic:
            self.metrics.recommendations_published.inc()
            if msg.event_ts_ms > 0:
                self.metrics.event_to_rec_seconds.observe(
                    max(0.0, self.clock() - msg.event_ts_ms / 1000.0)
                )
        else:
            reason = dict(msg.headers).get(HEADER_ERROR, b"unknown").decode()
            self.metrics.dead_letters.labels(reason=reason, topic=self.settings.events_topic).inc()
