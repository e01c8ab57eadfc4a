"""The outbox relay on its own thread: delivered rows deleted, failed ones sent again, none lost.

The producer is a fake whose deliveries the test decides (the relay only uses ``send`` and the
futures' callbacks); the store is a real SQLite database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from streamrec.ops.metrics import Metrics
from streamrec.ops.settings import load_settings
from streamrec.state.batch import BatchWrite, OutboxMessage
from streamrec.state.store import Store
from streamrec.worker.health import Health
from streamrec.worker.relay import OutboxRelay

RECS, DLQ = "recs", "dlq"


class FakeFuture:
    def __init__(self) -> None:
        self.callbacks: list[Callable[[Any], object]] = []
        self.errbacks: list[Callable[[BaseException], object]] = []

    def add_callback(self, fn: Callable[[Any], object]) -> None:
        self.callbacks.append(fn)

    def add_errback(self, fn: Callable[[BaseException], object]) -> None:
        self.errbacks.append(fn)


class FakeProducer:
    """Records sends; ``deliver``/``fail`` settle them as the broker would."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, list[tuple[str, bytes]], FakeFuture]] = []
        self.refuse: BaseException | None = None

    def send(self, topic: str, key: Any = None, value: Any = None, headers: Any = ()) -> Any:
        if self.refuse is not None:
            raise self.refuse
        future = FakeFuture()
        self.sent.append((topic, value, list(headers), future))
        return future

    def deliver(self, exc: BaseException | None = None) -> int:
        """Settle every send not settled yet; returns how many."""
        n = 0
        for *_, future in self.sent:
            if future.callbacks or future.errbacks:
                callbacks, errbacks = future.callbacks, future.errbacks
                future.callbacks, future.errbacks = [], []
                for fn in errbacks if exc is not None else callbacks:
                    fn(exc if exc is not None else object())
                n += 1
        return n


def _wait(pred: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'state.db'}") as s:
        s.migrate()
        s.claim_partitions("events", [0])
        yield s


def _commit(store: Store, n: int, topic: str = RECS, value: bytes = b"{}") -> list[OutboxMessage]:
    write = BatchWrite(topic="events", generations={0: 1}, next_offsets={0: n})
    write.messages = [OutboxMessage(topic, 0, b"u", value) for _ in range(n)]
    return store.commit_batch(write)


def _relay(store: Store, producer: FakeProducer) -> tuple[OutboxRelay, Health]:
    settings = load_settings(recs_topic=RECS, dlq_topic=DLQ, max_event_bytes=128, metrics_port=0)
    health = Health(2.0, lambda: None)
    relay = OutboxRelay(settings, store, Metrics(), health, lambda: [0])
    relay.backoff.initial_s = relay.backoff.delay_s = 0.05  # fast retries in tests
    relay.start(producer)  # type: ignore[arg-type]
    return relay, health


def test_delivered_rows_are_deleted_in_bulk(store: Store) -> None:
    producer = FakeProducer()
    relay, _ = _relay(store, producer)
    relay.submit(_commit(store, 50))
    _wait(lambda: len(producer.sent) == 50, "rows not sent")
    assert relay.backlog() == 50 and len(store.pending_outbox()) == 50
    producer.deliver()
    _wait(lambda: relay.backlog() == 0, "delivered rows still counted")
    assert store.pending_outbox() == []
    relay.stop(1.0)


def test_failed_sends_stay_in_the_outbox_and_are_sent_again(store: Store) -> None:
    producer = FakeProducer()
    relay, health = _relay(store, producer)
    relay.submit(_commit(store, 10))
    _wait(lambda: len(producer.sent) == 10, "rows not sent")
    producer.deliver(KafkaTimeoutError("no acks"))
    _wait(lambda: len(producer.sent) == 20, "failed rows not sent again")
    ready, why = health.ready(None, 1, "v", _view(relay))
    assert not ready and "output unreachable" in why
    assert len(store.pending_outbox()) == 10, "a failed row left the outbox"
    producer.deliver()
    _wait(lambda: relay.backlog() == 0, "re-sent rows not settled")
    assert store.pending_outbox() == []
    assert health.ready(None, 1, "v", _view(relay))[0]
    relay.stop(1.0)


def test_a_refused_send_is_retried_after_a_backoff(store: Store) -> None:
    producer = FakeProducer()
    producer.refuse = KafkaTimeoutError("no metadata within max_block_ms")
    relay, _ = _relay(store, producer)
    relay.submit(_commit(store, 3))
    time.sleep(0.2)
    assert relay.backlog() == 3 and producer.sent == []
    producer.refuse = None
    _wait(lambda: len(producer.sent) == 3, "refused rows never sent")
    producer.deliver()
    _wait(lambda: store.pending_outbox() == [], "rows not deleted")
    relay.stop(1.0)


def test_an_oversized_dead_letter_is_truncated_and_flagged(store: Store) -> None:
    producer = FakeProducer()
    relay, _ = _relay(store, producer)
    relay.submit(_commit(store, 1, topic=DLQ, value=bytes(range(200))))
    _wait(lambda: len(producer.sent) == 1, "dead letter not sent")
    producer.deliver(MessageSizeTooLargeError("too large"))
    _wait(lambda: len(producer.sent) == 2, "no truncated copy")
    _, value, headers, _ = producer.sent[1]
    assert value == bytes(range(128)) and ("x-streamrec-truncated", b"true") in headers
    producer.deliver()
    _wait(lambda: store.pending_outbox() == [], "truncated dead letter not cleared")
    relay.stop(1.0)


def test_read_back_sends_left_over_rows_once(store: Store) -> None:
    producer = FakeProducer()
    relay, _ = _relay(store, producer)
    left_over = _commit(store, 5)  # e.g. a crash between commit and publish
    fresh = _commit(store, 2)
    relay.submit(fresh)
    _wait(lambda: len(producer.sent) == 2, "fresh rows not sent")
    relay.resync()
    _wait(lambda: len(producer.sent) == 7, "left-over rows not read back")
    time.sleep(0.1)
    assert len(producer.sent) == 7, "a row in flight was sent twice"
    producer.deliver()
    _wait(lambda: store.pending_outbox() == [], "rows not deleted")
    assert len(left_over) == 5
    relay.stop(1.0)


def test_stop_gives_up_after_the_drain_timeout_and_keeps_the_rows(store: Store) -> None:
    producer = FakeProducer()
    relay, _ = _relay(store, producer)
    relay.submit(_commit(store, 4))
    _wait(lambda: len(producer.sent) == 4, "rows not sent")
    start = time.monotonic()
    relay.stop(0.3)  # never delivered
    assert time.monotonic() - start < 1.5
    assert len(store.pending_outbox()) == 4


def _view(relay: OutboxRelay) -> Any:
    from streamrec.worker.health import OutputView

    return OutputView(relay.backlog(), relay.oldest_unacked_s(), False)


def test_the_backlog_gauge_counts_the_outbox_table(store: Store) -> None:
    """Rows another (or a dead) worker left count too: the gauge is the table, not memory."""
    producer = FakeProducer()
    relay, _ = _relay(store, producer)
    gauge = relay.metrics.outbox_pending
    _commit(store, 7)  # left in the table, never handed to this relay
    relay._counted_at = -1e9  # count at the next iteration instead of in 5 s
    _wait(lambda: gauge._value.get() == 7, "left-over rows are not in the gauge")
    assert relay.backlog() == 0
    relay.submit(_commit(store, 3))
    _wait(lambda: len(producer.sent) == 3, "rows not sent")
    producer.deliver()
    _wait(lambda: relay.backlog() == 0, "delivered rows still counted")
    relay.stop(1.0)  # counts once more on the way out
    assert gauge._value.get() == 7
