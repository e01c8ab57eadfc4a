"""Helpers for integration tests: run a worker in a thread, read topics, scrape metrics."""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streamrec.core.events import Event
from streamrec.io.codec import encode_event
from streamrec.ops.http import OpsServer
from streamrec.ops.settings import Settings, load_settings
from streamrec.worker import Worker


def unique_settings(bootstrap: str, model_dir: Path, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings with topics and group unique to the test, SQLite in ``tmp_path``."""
    tag = uuid.uuid4().hex[:8]
    return load_settings(
        **{
            "bootstrap_servers": bootstrap,
            "model_dir": model_dir,
            "db_url": f"sqlite:///{tmp_path / 'state.db'}",
            "group_id": f"g-{tag}",
            "events_topic": f"events-{tag}",
            "items_topic": f"items-{tag}",
            "recs_topic": f"recs-{tag}",
            "dlq_topic": f"dlq-{tag}",
            "metrics_port": 0,
            "poll_timeout_ms": 100,
            **overrides,
        }
    )


@dataclass
class RunningWorker:
    """A worker thread and its ops server."""

    worker: Worker
    thread: threading.Thread
    stop: threading.Event
    server: list[OpsServer] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def alive(self) -> bool:
        """True while the worker runs; re-raises the error that stopped it."""
        if self.errors:
            raise self.errors[0]
        return self.thread.is_alive()

    @property
    def url(self) -> str:
        return self.server[0].url


@contextmanager
def running_worker(settings: Settings, ready_timeout_s: float = 60) -> Iterator[RunningWorker]:
    """Start a worker in a thread; wait until it owns partitions; stop and join at exit."""
    worker = Worker(settings)
    stop = threading.Event()
    running = RunningWorker(worker, threading.Thread(target=lambda: None), stop)
    errors = running.errors

    def target() -> None:
        try:
            worker.run(stop, on_ready=running.server.append)
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)

    running.thread = threading.Thread(target=target, daemon=True)
    running.thread.start()
    deadline = time.monotonic() + ready_timeout_s
    while not worker.ready()[0] and time.monotonic() < deadline and not errors:
        time.sleep(0.1)
    try:
        if errors:
            raise errors[0]
        assert worker.ready()[0], f"worker not ready: {worker.ready()[1]}"
        yield running
    finally:
        stop.set()
        running.thread.join(timeout=20)
    assert not running.thread.is_alive(), "worker did not stop within 20 s"
    if errors:
        raise errors[0]


def producer(settings: Settings, **kwargs: Any) -> KafkaProducer:
    """A plain kafka-python producer, as a user would write it."""
    return KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", **kwargs)


def read_topic(
    bootstrap: str,
    topic: str,
    expected: int | Callable[[list[Any]], bool],
    timeout_s: float = 60,
) -> list[Any]:
    """Read a topic from the beginning until ``expected`` records arrived (a count, or a
    predicate on the records read so far) or the timeout, then one more second to catch
    records beyond it (duplicates). Counts records: never trusts end offsets."""
    done = expected if callable(expected) else (lambda got: len(got) >= expected)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    try:
        deadline = time.monotonic() + timeout_s
        parts: set[int] = set()
        while not parts and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic) or set()
            time.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        while not done(out) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                out.extend(batch)
        grace = time.monotonic() + 1.0
        while time.monotonic() < grace:
            for batch in consumer.poll(timeout_ms=200).values():
                out.extend(batch)
        return out
    finally:
        consumer.close()


def send_events(settings: Settings, events: Sequence[Event], linger_ms: int = 5) -> None:
    """Produce events keyed by user with a plain kafka-python producer, as a user would."""
    prod = producer(settings, linger_ms=linger_ms)
    for e in events:
        prod.send(settings.events_topic, key=e.user_id.encode(), value=encode_event(e))
    prod.flush(30)
    prod.close()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of /metrics as {(name, sorted labels): value}."""
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def secured_round_trip(
    settings: Settings, bootstrap: str, security: dict[str, Any], n_events: int
) -> None:
    """Through a secured listener (TLS, SASL): the worker answers every one of ``n_events``
    events; the test's own producer and consumer use ``security`` too."""
    import json

    from streamrec.io.clients import ensure_topics
    from streamrec.ranking.modelfiles import read_model_dir

    ensure_topics(settings)
    items = read_model_dir(settings.model_dir).item_ids
    events = [Event(f"e{i}", f"u{i % 7}", items[i % len(items)], "click", 1_700_000_000_000 + i)
              for i in range(n_events)]  # fmt: skip
    with running_worker(settings):
        prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **security)
        for e in events:
            prod.send(settings.events_topic, key=e.user_id.encode(), value=encode_event(e))
        prod.flush(30)
        prod.close()
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=20000, **security)
        tps = [TopicPartition(settings.recs_topic, p) for p in range(4)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        answered: set[str] = set()
        for record in consumer:
            answered.add(json.loads(record.value)["event_id"])
            if len(answered) == len(events):
                break
        consumer.close()
    assert answered == {e.event_id for e in events}
