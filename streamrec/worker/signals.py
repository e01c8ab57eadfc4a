"""Global signals over Kafka: publish this worker's trending and co-visitation deltas, merge the
others' (``streamrec.ranking.signals`` is the pure part: what a delta is, when it counts).

Every worker reads the whole signals topic outside the consumer group (like the catalog):
all partitions assigned, from the beginning at every start, so a restarted worker rebuilds the
counts of the other partitions from the deltas the topic still holds (its retention bounds how
far back: ``streamrec topics`` creates the topic with ``signals_retention_ms``); the
partitions it then claims are restored from the database beyond the watermark the deltas left
(``streamrec.state.restore``), so no event is counted twice. A delta is keyed by its source
partition: the deltas of one partition stay in order, whichever worker sent them.

The worker publishes every ``signals_interval_ms``, when partitions are revoked (before the
next owner restores them) and when it stops. Records are compact JSON (``encode_delta``);
one that cannot be decoded is counted (``outcome="bad"``) and skipped.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from streamrec.io.clients import make_consumer, make_producer
from streamrec.ops.metrics import Metrics
from streamrec.ops.settings import Settings
from streamrec.ranking.ranker import Ranker
from streamrec.ranking.signals import DeltaRecorder, SignalDelta

log = logging.getLogger(__name__)

POLL_MAX_RECORDS = 200  # deltas merged per loop iteration at most
MAX_RECORD_BYTES = 900_000  # under Kafka's default 1 MB message limit (long ids can get there)
FORMAT_VERSION = 1


def encode_delta(delta: SignalDelta) -> bytes:
    """The record value of a delta (compact JSON)."""
    body = {
        "v": FORMAT_VERSION,
        "src": delta.source,
        "p": delta.partition,
        "s": delta.start,
        "e": delta.end,
        "t": delta.ts_ms,
        "at": round(delta.sent_at_s, 3),
        "i": [[i, _round(w)] for i, w in delta.items],
        "c": [[a, b, _round(w)] for a, b, w in delta.pairs],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_delta(value: bytes) -> SignalDelta:
    """A delta from its record value; ValueError (or KeyError, TypeError) when malformed."""
    body = json.loads(value)
    if body.get("v") != FORMAT_VERSION:
        raise ValueError(f"unknown signals format {body.get('v')!r}")
    return SignalDelta(
        str(body["src"]),
        int(body["p"]),
        int(body["s"]),
        int(body["e"]),
        float(body["t"]),
        tuple((str(i), float(w)) for i, w in body["i"]),
        tuple((str(a), str(b), float(w)) for a, b, w in body["c"]),
        float(body.get("at", 0.0)),
    )


def fitted(delta: SignalDelta, limit: int = MAX_RECORD_BYTES) -> bytes:
    """The record value of ``delta``, its lightest pairs (then items) dropped until it fits
    in ``limit`` bytes (the caps keep that rare: it takes ids of hundreds of characters)."""
    value = encode_delta(delta)
    while len(value) > limit and (delta.pairs or len(delta.items) > 1):
        if delta.pairs:
            pairs = sorted(delta.pairs, key=lambda p: -p[2])[: len(delta.pairs) // 2]
            delta = replace(delta, pairs=tuple(pairs))
        else:
            items = sorted(delta.items, key=lambda i: -i[1])[: len(delta.items) // 2]
            delta = replace(delta, items=tuple(items))
        value = encode_delta(delta)
    return value


def _round(weight: float) -> float:
    return float(f"{weight:.6g}")  # 6 significant digits: far below what ranking can tell


def make_recorder(settings: Settings, ranker: Ranker, source: str) -> DeltaRecorder:
    """A recorder for ``ranker``'s counting (installed as ``ranker.recorder``)."""
    cfg = ranker.config
    covisit_ms = None if cfg.covisit_half_life_s is None else cfg.covisit_half_life_s * 1000.0
    return DeltaRecorder(
        source,
        cfg.trending_half_life_s * 1000.0,
        covisit_ms,
        max_items=settings.signals_max_items,
        max_pairs=settings.signals_max_pairs,
    )


def worker_name(settings: Settings) -> str:
    """This process's name in the deltas it sends (diagnostics only)."""
    return f"{settings.client_id}-{socket.gethostname()}-{os.getpid()}"


class SignalExchange:
    """Publishes the ranker's deltas and merges the other workers'.

    Args:
        settings: topics and the interval.
        metrics: deltas and bytes by outcome, staleness.
        ranker: the ranker served now (a model reload replaces it; the state is shared).
        clock: seconds since the epoch (the deltas' send time, for staleness).
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        ranker: Callable[[], Ranker | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.topic = settings.signals_topic
        self.metrics = metrics
        self.ranker = ranker
        self.clock = clock
        # the signals topic lives on the input cluster, whatever the output cluster is
        self.producer = make_producer(
            settings.model_copy(update={"output_bootstrap_servers": None})
        )
        self.consumer = make_consumer(settings, group=False)
        self.partitions = self._assign()
        self._due = time.monotonic() + settings.signals_interval_ms / 1000.0

    def _assign(self) -> list[TopicPartition]:
        deadline = time.monotonic() + 10
        parts = self.consumer.partitions_for_topic(self.topic)
        while not parts and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = self.consumer.partitions_for_topic(self.topic)
        if not parts:
            log.warning(
                "signals topic %s not found: counting this worker's events only", self.topic
            )
            return []
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        return tps

    def catch_up(self, timeout_s: float = 30.0) -> int:
        """Merge the topic up to its current end (at start, before claiming partitions)."""
        if not self.partitions:
            return 0
        ends = self.consumer.end_offsets(self.partitions)
        merged = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.consumer.position(tp) >= ends[tp] for tp in self.partitions):
                break
            merged += self.poll(timeout_ms=200)
        log.info("signals merged at start: %d deltas", merged)
        return merged

    def poll(self, timeout_ms: int = 0) -> int:
        """Merge the deltas available now (at most ``POLL_MAX_RECORDS``); returns how many."""
        ranker = self.ranker()
        if not self.partitions or ranker is None:
            return 0
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=POLL_MAX_RECORDS)
        n = 0
        for batch in polled.values():
            for rec in batch:
                n += 1
                self.metrics.signal_bytes.labels(direction="in").inc(len(rec.value or b""))
                try:
                    delta = decode_delta(rec.value)
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("signals record %d:%d skipped: %s", rec.partition, rec.offset, exc)
                    self.metrics.signal_deltas.labels(outcome="bad").inc()
                    continue
                outcome = ranker.merge_signals(delta)
                self.metrics.signal_deltas.labels(outcome=outcome).inc()
                if outcome == "applied" and delta.sent_at_s:
                    self.metrics.signals_merged(delta.sent_at_s)
        return n

    def publish(self, force: bool = False) -> int:
        """Send the recorded deltas when the interval is due (or ``force``); returns how many."""
        now = time.monotonic()
        if not force and now < self._due:
            return 0
        self._due = now + self.settings.signals_interval_ms / 1000.0
        ranker = self.ranker()
        if ranker is None or ranker.recorder is None:
            return 0
        deltas = ranker.recorder.take(self.clock())
        if not self.partitions:  # no topic: a send would wait for it (and might create it)
            return 0
        for delta in deltas:
            value = fitted(delta)
            try:
                self.producer.send(self.topic, key=str(delta.partition).encode(), value=value)
            except KafkaError as exc:  # lost for the others: their counts miss this range
                log.warning("signals delta not sent: %s", type(exc).__name__)
                self.metrics.errors.labels(component="signals").inc()
                continue
            self.metrics.signal_deltas.labels(outcome="published").inc()
            self.metrics.signal_bytes.labels(direction="out").inc(len(value))
        return len(deltas)

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is recorded, then close both clients (bounded)."""
        closers: list[Callable[[], Any]] = [
            lambda: self.publish(force=True),
            lambda: self.producer.flush(timeout=timeout_s),
            lambda: self.producer.close(timeout=timeout_s),
            lambda: self.consumer.close(autocommit=False),
        ]
        for close in closers:
            try:
                close()
            except KafkaError as exc:
                log.warning("closing the signals clients: %s", type(exc).__name__)
