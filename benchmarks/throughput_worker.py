"""The whole worker on the embedded broker, for ``throughput.py``: one live worker, phases.

``LiveWorker`` runs a ``Worker`` in a thread and reads the output topic in the benchmark's
thread. A phase is a set of events whose recommendations it waits for: the drain (a backlog
produced before the worker starts), then paced phases (events produced while it runs, by a
separate process so that the producer does not compete with the worker for the GIL) and
bursts. ``verify_output`` reads the whole output topic back at the end: every event answered
exactly once (records counted, not end offsets; no duplicate ``rec_id`` or ``event_id``).

Not a script: ``throughput.py`` imports it (this folder is on ``sys.path`` then).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness import assigned_consumer, sample_sums, say
from kafka.structs import TopicPartition

from streamrec.core.events import Event
from streamrec.io.traffic import produce_events
from streamrec.ops.metrics import Metrics
from streamrec.ops.settings import Settings
from streamrec.worker import Worker
from streamrec.worker.serving import ServingModel
from streamrec.worker.step import Record


@dataclass(frozen=True, slots=True)
class Output:
    """One output record: receive time (s), record timestamp (ms), ids, ``generated_at``."""

    recv: float
    ts_ms: int
    event_id: str
    rec_id: str
    generated_ms: int


@dataclass
class Phase:
    """The outputs of one set of events, and the worker's metrics over that time."""

    name: str
    events: int
    rate_target: float = 0.0
    t_begin: float = 0.0
    outputs: list[Output] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # output ts - input ts, seconds
    metrics: dict[str, float] = field(default_factory=dict)  # deltas of the worker's own
    error: str = ""

    @property
    def received(self) -> int:
        """Events answered."""
        return len(self.outputs)

    @property
    def steady_rate(self) -> float:
        """Events per second after the first batch: its outputs' arrival to the last output.

        A batch's recommendations share one ``generated_at``; the first batch's events are not
        counted, since the window opens when they arrive.
        """
        if not self.outputs:
            return float("nan")
        first_gen = min(o.generated_ms for o in self.outputs)
        first = [o.recv for o in self.outputs if o.generated_ms == first_gen]
        span = max(o.recv for o in self.outputs) - max(first)
        return (len(self.outputs) - len(first)) / span if span > 0 else float("nan")

    def batch_counts(self) -> tuple[float, float]:
        """Batches the worker processed in this phase and their mean size."""
        n, total = self.metrics.get("batches", 0.0), self.metrics.get("records", 0.0)
        return n, (total / n if n else float("nan"))


def metric_totals(metrics: Metrics) -> dict[str, float]:
    """The worker's cumulative batch counts and stage seconds (``stage:<name>``)."""
    out = {
        "batches": sample_sums(metrics.batch_size, "_count").get("", 0.0),
        "records": sample_sums(metrics.batch_size, "_sum").get("", 0.0),
    }
    for stage, sec in sample_sums(metrics.stage_seconds, "_sum", "stage").items():
        out[f"stage:{stage}"] = sec
    return out


def read_outputs(bootstrap: str, topic: str, out: Any, stop: Any) -> None:
    """In a process of its own: read ``topic`` from the beginning and put batches of
    ``Output`` fields on ``out`` until ``stop`` is set (JSON decoding and the consumer's work
    stay off the worker's GIL)."""
    consumer = assigned_consumer(bootstrap, topic)
    try:
        while not stop.is_set():
            polled = consumer.poll(timeout_ms=50, max_records=5000)
            now = time.time()
            rows = []
            for batch in polled.values():
                for r in batch:
                    msg = json.loads(r.value)
                    ids = (msg["event_id"], msg["rec_id"], msg["generated_at"])
                    rows.append((now, r.timestamp, *ids))
            if rows:
                out.put(rows)
    finally:
        consumer.close()


class LiveWorker:
    """A ``Worker`` in a thread, its outputs read by a separate process (``read_outputs``);
    ``stop`` ends both."""

    def __init__(self, settings: Settings, model: ServingModel, items: int) -> None:
        self.settings = settings
        self.model = model
        self.items = items  # searchable items once the catalog is applied
        self.worker = Worker(settings, model=model)
        ctx = mp.get_context("spawn")
        self.outputs: Any = ctx.Queue()
        self.reader_stop = ctx.Event()
        self.reader = ctx.Process(
            target=read_outputs,
            args=(settings.bootstrap_servers, settings.recs_topic, self.outputs, self.reader_stop),
            name="bench-output-reader",
            daemon=True,
        )
        self.reader.start()
        self.stop_flag = threading.Event()
        self.failure: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="bench-worker", daemon=True)
        self.t_start = float("nan")
        self.catalog_s = float("nan")  # worker start -> every catalog item searchable
        self.claimed_s = float("nan")  # worker start -> partitions claimed
        self.answered: set[str] = set()
        self.late: list[Output] = []  # outputs of no current phase (duplicates, strays)

    def _run(self) -> None:
        try:
            self.worker.run(self.stop_flag)
        except BaseException as exc:  # reported, never swallowed silently
            self.failure.append(exc)

    def start(self) -> None:
        """Start the worker thread."""
        self.t_start = time.time()
        self.thread.start()

    def _tick(self) -> None:
        now = time.time()
        if self.catalog_s != self.catalog_s and self.model.index.size >= self.items:
            self.catalog_s = now - self.t_start
        if self.claimed_s != self.claimed_s and self.worker.generations:
            self.claimed_s = now - self.t_start

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the catalog is applied and partitions are claimed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.failure:
            self._tick()
            if self.catalog_s == self.catalog_s and self.claimed_s == self.claimed_s:
                return True
            time.sleep(0.05)
        return False

    def collect(
        self,
        phase: Phase,
        expected: Collection[str],
        timeout_s: float,
        during: Callable[[], None] | None = None,
    ) -> Phase:
        """Read outputs until every ``expected`` event id is answered (or ``timeout_s``)."""
        before = metric_totals(self.worker.metrics)
        want = set(expected)
        got: dict[str, Output] = {}
        deadline = time.monotonic() + timeout_s
        if during is not None:
            during()
        while len(got) < len(want) and time.monotonic() < deadline and not self.failure:
            self._tick()
            try:
                rows = self.outputs.get(timeout=0.05)
            except queue.Empty:
                continue
            for row in rows:
                out = Output(*row)
                if out.event_id in want and out.event_id not in got:
                    got[out.event_id] = out
                else:
                    self.late.append(out)
        after = metric_totals(self.worker.metrics)
        phase.metrics = {k: v - before.get(k, 0.0) for k, v in after.items()}
        phase.outputs = sorted(got.values(), key=lambda o: o.recv)
        self.answered.update(got)
        if self.failure:
            phase.error = f"worker failed: {type(self.failure[0]).__name__}: {self.failure[0]}"
        elif len(got) < len(want):
            phase.error = f"timed out: {len(got)}/{len(want)} answered"
        return phase

    def stop(self) -> str:
        """Stop the worker (it drains its outbox); returns a problem, or ''."""
        self.stop_flag.set()
        self.thread.join(timeout=30)
        self.reader_stop.set()
        self.reader.join(timeout=10)
        if self.reader.is_alive():
            self.reader.terminate()
        if self.thread.is_alive():
            return "worker thread did not stop within 30 s"
        return ""


def paced_phase(
    live: LiveWorker, name: str, events: Sequence[Event], rate: float, timeout_s: float
) -> Phase:
    """Produce ``events`` at ``rate`` from a separate process while the worker runs."""
    settings = live.settings
    proc = mp.get_context("spawn").Process(
        target=produce_events,
        args=(settings.bootstrap_servers, settings.events_topic, list(events)),
        kwargs={"rate": rate},
        daemon=True,
    )
    say(f"{name}: {len(events):,} events at {rate:,.0f}/s from a separate process ...")
    phase = Phase(name, len(events), rate_target=rate, t_begin=time.time())
    try:
        live.collect(
            phase, {e.event_id for e in events}, len(events) / rate + timeout_s, proc.start
        )
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
    return phase


def burst_phase(live: LiveWorker, name: str, events: Sequence[Event], timeout_s: float) -> Phase:
    """Produce ``events`` as fast as one producer can, while the (idle) worker runs."""
    settings = live.settings
    say(f"{name}: a burst of {len(events):,} events ...")
    phase = Phase(name, len(events), t_begin=time.time())

    def produce() -> None:
        produce_events(settings.bootstrap_servers, settings.events_topic, events)

    return live.collect(phase, {e.event_id for e in events}, timeout_s, produce)


def read_records(
    bootstrap: str,
    topic: str,
    n: int,
    timeout_s: float,
    settle_s: float = 0.0,
    start: dict[int, int] | None = None,
) -> tuple[list[Record], float]:
    """Read ``topic`` from the beginning (or from ``start``: partition -> offset): at least
    ``n`` records (counted, not end offsets), then ``settle_s`` more of polling for any extra;
    also the seconds the first ``n`` took."""
    consumer = assigned_consumer(bootstrap, topic)
    for p, offset in (start or {}).items():
        consumer.seek(TopicPartition(topic, p), offset)
    out: list[Record] = []
    first = done = None
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if done is not None and time.perf_counter() - done >= settle_s:
                break
            for batch in consumer.poll(timeout_ms=100, max_records=5000).values():
                first = first or time.perf_counter()
                out.extend(
                    Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
                    for r in batch
                )
            if done is None and len(out) >= n:
                done = time.perf_counter()
    finally:
        consumer.close()
    if len(out) < n:
        raise RuntimeError(f"read back only {len(out)} of {n} records from {topic}")
    return out, (done or time.perf_counter()) - (first or time.perf_counter())


def event_id_of(record: Record) -> str:
    """The event id in an input or output record's value."""
    return str(json.loads(record.value or b"{}")["event_id"])


def input_timestamps(records: Sequence[Record]) -> dict[str, int]:
    """event_id -> Kafka timestamp (ms) of its input record."""
    return {event_id_of(r): r.timestamp_ms for r in records}


def set_latencies(phases: Sequence[Phase], input_ts: dict[str, int]) -> None:
    """Output record timestamp - input record timestamp, per output, in seconds."""
    for phase in phases:
        phase.latencies = [
            (o.ts_ms - input_ts[o.event_id]) / 1000.0
            for o in phase.outputs
            if o.event_id in input_ts
        ]


def verify_output(
    settings: Settings, produced: Collection[str], timeout_s: float
) -> dict[str, Any]:
    """Read the whole output topic back: records, duplicates, missing and unknown event ids."""
    records, _ = read_records(
        settings.bootstrap_servers, settings.recs_topic, len(produced), timeout_s, settle_s=2.0
    )
    events, recs = [], []
    for r in records:
        msg = json.loads(r.value or b"{}")
        events.append(msg["event_id"])
        recs.append(msg["rec_id"])
    want = set(produced)
    return {
        "produced": len(want),
        "records": len(records),
        "dup_event_ids": len(events) - len(set(events)),
        "dup_rec_ids": len(recs) - len(set(recs)),
        "missing": len(want - set(events)),
        "unknown": len(set(events) - want),
        "ok": len(records) == len(want) == len(set(recs)) and set(events) == want,
    }
