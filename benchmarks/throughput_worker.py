"""The whole worker on the embedded broker, for ``throughput.py``: drain and paced runs.

Not a script: ``throughput.py`` imports it (this folder is on ``sys.path`` then).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness import assigned_consumer, sample_sums, say, wait_claimed
from kafka import KafkaConsumer

from streamrec.io.simulate import SimConfig, Simulator
from streamrec.io.traffic import produce_events
from streamrec.ops.metrics import Metrics
from streamrec.ops.settings import Settings
from streamrec.worker import Worker
from streamrec.worker.serving import ServingModel
from streamrec.worker.step import Record


def read_back(bootstrap: str, topic: str, n: int, timeout_s: float) -> tuple[list[Record], float]:
    """Read n records of ``topic`` (counted, not trusted from end offsets); also the poll time."""
    consumer = assigned_consumer(bootstrap, topic)
    out: list[Record] = []
    first = None
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200, max_records=1000).values():
                if first is None:
                    first = time.perf_counter()
                out.extend(
                    Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
                    for r in batch
                )
    finally:
        consumer.close()
    if len(out) < n:
        raise RuntimeError(f"read back only {len(out)} of {n} records from {topic}")
    return out, time.perf_counter() - (first or time.perf_counter())


@dataclass
class RunResult:
    """One worker run: timing, per-output latencies and the worker's own metrics."""

    name: str
    events: int
    received: int = 0
    t_start: float = 0.0
    t_claimed: float = float("nan")
    t_first: float = float("nan")
    t_last: float = float("nan")
    lat_gen: list[float] = field(default_factory=list)
    lat_send: list[float] = field(default_factory=list)
    lat_recv: list[float] = field(default_factory=list)
    outputs: list[tuple[float, int, str, int]] = field(default_factory=list)
    metrics: Metrics | None = None
    error: str = ""
    rate_target: float = 0.0

    @property
    def steady_rate(self) -> float:
        """Events per second after the first batch: its outputs' arrival to the last output.

        A batch's recommendations share one ``generated_at``; the first batch's events are not
        counted, since the window opens when they arrive.
        """
        if not self.outputs:
            return float("nan")
        first_gen = min(o[3] for o in self.outputs)
        first = [o[0] for o in self.outputs if o[3] == first_gen]
        span = self.t_last - max(first)
        return (len(self.outputs) - len(first)) / span if span > 0 else float("nan")

    def batches(self) -> tuple[float, float]:
        """Batches the worker processed and their mean size, from its histogram."""
        if self.metrics is None:
            return float("nan"), float("nan")
        count = sample_sums(self.metrics.batch_size, "_count").get("", 0.0)
        total = sample_sums(self.metrics.batch_size, "_sum").get("", 0.0)
        return count, (total / count if count else float("nan"))

    def rate_since(self, t0: float) -> float:
        """Events per second from ``t0`` to the last recommendation received."""
        span = self.t_last - t0
        return self.received / span if span > 0 else float("nan")


def run_worker(
    settings: Settings,
    model: ServingModel,
    out_consumer: KafkaConsumer,
    expected: set[str],
    name: str,
    timeout_s: float,
    before_wait: Callable[[Worker], None] | None = None,
) -> RunResult:
    """Run a Worker in a thread until a recommendation for every expected event id arrives.

    Each output is kept as (receive time, output record timestamp ms, event_id, generated_at ms).
    """
    result = RunResult(name=name, events=len(expected))
    worker = Worker(settings, model=model)
    result.metrics = worker.metrics
    stop = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            worker.run(stop)
        except BaseException as exc:  # reported, never swallowed silently
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"worker-{name}", daemon=True)
    result.t_start = time.time()
    thread.start()
    seen: set[str] = set()
    pending: list[tuple[float, int, bytes]] = []
    try:
        if before_wait is not None:
            before_wait(worker)
        deadline = time.monotonic() + timeout_s
        while len(seen) < len(expected) and time.monotonic() < deadline and not failure:
            if result.t_claimed != result.t_claimed and worker.generations:
                result.t_claimed = time.time()
            polled = out_consumer.poll(timeout_ms=50, max_records=2000)
            now = time.time()
            for batch in polled.values():
                for r in batch:
                    event_id = json.loads(r.value)["event_id"]
                    if event_id in expected and event_id not in seen:
                        seen.add(event_id)
                        pending.append((now, r.timestamp, r.value))
                        if result.t_first != result.t_first:
                            result.t_first = now
                        result.t_last = now
    finally:
        stop.set()
        thread.join(timeout=30)
        if thread.is_alive():
            result.error = "worker thread did not stop within 30 s"
    if failure:
        result.error = f"worker failed: {type(failure[0]).__name__}: {failure[0]}"
    result.received = len(seen)
    for recv, send_ms, value in pending:
        msg = json.loads(value)
        result.outputs.append((recv, send_ms, msg["event_id"], msg["generated_at"]))
    if result.received < len(expected):
        result.error = result.error or f"timed out: {result.received}/{len(expected)} received"
    return result


def paced_run(
    settings: Settings,
    model: ServingModel,
    out_consumer: KafkaConsumer,
    rate: float,
    seconds: float,
    timeout_s: float,
    seed: int,
) -> RunResult:
    """Produce events at ``rate`` from a separate process while the worker runs."""
    n = max(1, int(rate * seconds))
    events = list(Simulator(SimConfig(seed=seed)).events(n))
    expected = {e.event_id for e in events}
    ctx = mp.get_context("spawn")
    procs: list[Any] = []

    def start_producer(worker: Worker) -> None:
        wait_claimed(worker, 30)
        proc = ctx.Process(
            target=produce_events,
            args=(settings.bootstrap_servers, settings.events_topic, events),
            kwargs={"rate": rate},
            daemon=True,
        )
        proc.start()
        procs.append(proc)

    say(f"paced run: {n} events at {rate:.0f}/s from a separate process ...")
    try:
        result = run_worker(
            settings, model, out_consumer, expected, "paced", seconds + timeout_s, start_producer
        )
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
    result.rate_target = rate
    return result


def input_timestamps(records: Sequence[Record]) -> dict[str, int]:
    """event_id -> Kafka timestamp (ms) of its input record."""
    return {json.loads(r.value or b"{}")["event_id"]: r.timestamp_ms for r in records}


def compute_latencies(run: RunResult, input_ts: dict[str, int]) -> None:
    """Per-output latencies from the input records' Kafka timestamps."""
    for recv, send_ms, event_id, generated_ms in run.outputs:
        in_ms = input_ts.get(event_id, 0)
        if in_ms > 0:
            run.lat_gen.append((generated_ms - in_ms) / 1000.0)
            run.lat_send.append((send_ms - in_ms) / 1000.0)
            run.lat_recv.append(recv - in_ms / 1000.0)
