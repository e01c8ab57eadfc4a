"""Writing simulated traffic: JSON-lines files and plain kafka-python producers."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from kafka import KafkaProducer
from kafka.errors import KafkaError

from streamrec.core.events import CatalogOp, Event
from streamrec.errors import BrokerError
from streamrec.io.codec import encode_catalog, encode_event


def write_events(path: Path, events: Iterable[Event]) -> int:
    """Write events as JSON lines; returns the count."""
    n = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for event in events:
            fh.write(encode_event(event) + b"\n")
            n += 1
    return n


def _producer(bootstrap: str) -> KafkaProducer:
    try:
        return KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=5)
    except KafkaError as exc:
        raise BrokerError(f"cannot connect to {bootstrap}: {exc}") from exc


def produce_catalog(bootstrap: str, topic: str, ops: Iterable[CatalogOp]) -> int:
    """Publish catalog records keyed by item id; returns the count."""
    producer = _producer(bootstrap)
    n = 0
    try:
        for op in ops:
            producer.send(topic, key=op.item_id.encode(), value=encode_catalog(op))
            n += 1
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)
    return n


def produce_events(
    bootstrap: str,
    topic: str,
    events: Iterable[Event],
    rate: float = 0.0,
    realtime: bool = False,
    stop: object | None = None,
) -> int:
    """Publish events keyed by user id, optionally paced at ``rate`` per second.

    Args:
        bootstrap: HOST:PORT of the broker.
        topic: destination topic.
        events: the events.
        rate: events per second (0 = as fast as possible).
        realtime: stamp events with the current time instead of their own ``ts``.
        stop: a ``threading.Event``; production stops when it is set.
    """
    producer = _producer(bootstrap)
    n = 0
    start = time.monotonic()
    try:
        for event in events:
            if stop is not None and stop.is_set():  # type: ignore[attr-defined]
                break
            if realtime:
                event = replace(event, ts=int(time.time() * 1000))
            producer.send(topic, key=event.user_id.encode(), value=encode_event(event))
            n += 1
            if rate > 0:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)
    return n
