"""Throughput and latency of the whole worker, and of each stage of the event path alone.

One run, one process, writes ``benchmarks/THROUGHPUT.md``:

(a) the whole ``Worker`` on the embedded broker:
    * drain: N events are produced *before* the worker starts, so the run measures how fast a
      backlog is drained (latencies then include queueing);
    * paced: events produced in real time (by a separate process, so that the producer does not
      compete with the worker for the GIL) at about half the drain throughput, for unqueued
      latency.
(b) each stage alone on the same events, in this process: poll (a plain consumer), decode,
    store (dedupe read + ``load_users`` + ``commit_batch`` + outbox delete, fresh database),
    encode (``OnnxEncoder.encode``), search (``ItemIndex.search``), rank + serialize, produce.

Usage::

    python benchmarks/throughput.py                      # trains a small model first (~1 min)
    python benchmarks/throughput.py --model /tmp/model --events 2000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing as mp
import os
import platform
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from streamrec.core.events import Event, Recommendation, rec_id_for
from streamrec.io.broker import EmbeddedBroker
from streamrec.io.clients import create_topics, ensure_topics, make_producer
from streamrec.io.codec import decode_event, encode_recommendation
from streamrec.io.simulate import SimConfig, Simulator
from streamrec.io.traffic import produce_catalog, produce_events, write_events
from streamrec.ops.metrics import Metrics
from streamrec.ops.settings import Settings, load_settings
from streamrec.ranking.encoder import Encoder
from streamrec.ranking.index import ItemIndex
from streamrec.ranking.modelfiles import META_FILE
from streamrec.ranking.rank import rank
from streamrec.state.store import BatchWrite, OutboxMessage, Store
from streamrec.worker.loop import ServingModel, Worker, load_serving_model
from streamrec.worker.step import Pipeline, Record

log = logging.getLogger("throughput")
TRAIN_EVENTS = 20_000
PARTITIONS = 4
SCRATCH_TOPIC = "streamrec.bench.scratch"


# -- helpers -------------------------------------------------------------------------------------
def say(msg: str) -> None:
    """Progress on stderr, timestamped."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict[str, str]:
    """nproc, CPU model, Python, load average and the versions that matter."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for mod in ("onnxruntime", "hnswlib", "kafka", "sqlalchemy", "numpy"):
        with suppress(ImportError, AttributeError):
            versions.append(f"{mod} {__import__(mod).__version__}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "load": load,
        "versions": ", ".join(versions),
    }


def pct(values: Sequence[float], q: float) -> float:
    """Percentile, NaN for no values."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


def sample_sums(metric: Any, suffix: str, label: str | None = None) -> dict[str, float]:
    """Sum of a Prometheus metric's samples ending in ``suffix``, keyed by one label's value."""
    out: dict[str, float] = {}
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith(suffix):
                key = s.labels.get(label, "") if label else ""
                out[key] = out.get(key, 0.0) + s.value
    return out


def histogram_quantile(hist: Any, q: float) -> tuple[float, float]:
    """Bucket bounds (lower, upper) in which quantile ``q`` of a Prometheus histogram falls."""
    buckets = []
    for family in hist.collect():
        for s in family.samples:
            if s.name.endswith("_bucket"):
                buckets.append((float(s.labels["le"]), s.value))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    lower = 0.0
    for le, cum in buckets:
        if total and cum >= q * total:
            return lower, le
        lower = le
    return float("nan"), float("nan")


@dataclass
class Timer:
    """Accumulates seconds and counts per name."""

    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.calls[name] = self.calls.get(name, 0) + 1


# -- model ---------------------------------------------------------------------------------------
def ensure_model(model: Path | None, tmp: Path) -> Path:
    """Reuse ``model`` or train a small one on simulated traffic into ``tmp``."""
    if model is not None:
        if not (model / META_FILE).is_file():
            raise SystemExit(f"--model {model}: no {META_FILE} there")
        return model
    from streamrec.training.train import TrainConfig, train_file

    data = tmp / "train.jsonl"
    write_events(data, Simulator(SimConfig(seed=0)).events(TRAIN_EVENTS))
    say(f"training a small model on {TRAIN_EVENTS} simulated events (10 epochs) ...")
    start = time.monotonic()
    summary = train_file(data, tmp / "model", TrainConfig(epochs=10, progress=False))
    say(f"model {summary['version']} trained in {time.monotonic() - start:.0f}s")
    return tmp / "model"


# -- the broker side -----------------------------------------------------------------------------
def assigned_consumer(bootstrap: str, topic: str, timeout_s: float = 15.0) -> KafkaConsumer:
    """A group-less consumer with every partition of ``topic`` assigned, from the beginning."""
    # A short fetch wait: the embedded broker holds an empty fetch for the whole
    # fetch_max_wait_ms (default 500 ms) instead of answering when data arrives, which would
    # add up to that much to every latency measured here.
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    deadline = time.monotonic() + timeout_s
    parts = consumer.partitions_for_topic(topic)
    while not parts and time.monotonic() < deadline:
        time.sleep(0.1)
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        consumer.close()
        raise RuntimeError(f"topic {topic} has no partitions")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return consumer


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
        ready_by = time.monotonic() + 30
        while not worker.generations and time.monotonic() < ready_by:
            time.sleep(0.05)
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


# -- stages alone --------------------------------------------------------------------------------
class RecordingEncoder:
    """Passes through to the real encoder and keeps each batch of histories."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.max_len = inner.max_len
        self.batches: list[list[np.ndarray]] = []

    def encode(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Encode and record."""
        self.batches.append(list(histories))
        return self.inner.encode(histories)


class RecordingIndex:
    """Passes through to the real index and keeps each search call's inputs and outputs."""

    def __init__(self, inner: ItemIndex) -> None:
        self.inner = inner
        self.calls: list[tuple[np.ndarray, int, list[set[str]], list[list[tuple[str, float]]]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.inner

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[set[str]] | None = None) -> Any:
        """Search and record."""
        found = self.inner.search(queries, k, exclude)
        self.calls.append((queries, k, list(exclude or []), found))
        return found


class TimedStore:
    """The reads the pipeline makes, timed."""

    def __init__(self, store: Store, timer: Timer) -> None:
        self.store = store
        self.timer = timer

    def applied(self, event_ids: Sequence[str]) -> set[str]:
        """Timed ``Store.applied``."""
        with self.timer("store: applied (dedupe read)"):
            return self.store.applied(event_ids)

    def load_users(self, user_ids: Sequence[str]) -> dict[str, Any]:
        """Timed ``Store.load_users``."""
        with self.timer("store: load_users"):
            return self.store.load_users(user_ids)


@dataclass
class StageResult:
    """Seconds per stage for ``events`` events, and what each measures."""

    events: int
    seconds: dict[str, float] = field(default_factory=dict)
    what: dict[str, str] = field(default_factory=dict)
    detail: dict[str, float] = field(default_factory=dict)
    batches: int = 0
    pipeline_in_process_s: float = 0.0


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def stage_benchmarks(
    settings: Settings, model: ServingModel, records: Sequence[Record], poll_s: float, tmp: Path
) -> StageResult:
    """Each stage alone, on the records the drain run consumed."""
    res = StageResult(events=len(records))
    res.seconds["poll"] = poll_s
    res.what["poll"] = "plain KafkaConsumer (assigned, no group) reading the input topic"

    say("stage: decode ...")
    start = time.perf_counter()
    for r in records:
        decode_event(r.value, r.key, settings.max_event_bytes, settings.max_id_len)
    res.seconds["decode"] = time.perf_counter() - start
    res.what["decode"] = "events.decode_event over the raw values (+ key check)"

    say("stage: store (pipeline batches on a fresh SQLite file) ...")
    messages, encoder, index = _store_stage(settings, model, records, tmp, res)

    say("stage: encode ...")
    start = time.perf_counter()
    for batch in encoder.batches:
        model.encoder.encode(batch)
    res.seconds["encode"] = time.perf_counter() - start
    res.what["encode"] = "OnnxEncoder.encode on the pipeline's batches of histories"

    say("stage: search ...")
    start = time.perf_counter()
    for queries, k, excl, _ in index.calls:
        model.index.search(queries, k, excl)
    res.seconds["search"] = time.perf_counter() - start
    res.what["search"] = f"ItemIndex.search, k={settings.top_k}, with the history exclusions"

    say("stage: rank + serialize ...")
    start = time.perf_counter()
    for _, k, excl, found in index.calls:
        for cands, skip in zip(found, excl, strict=True):
            items = rank(cands, k, skip, model.index.is_live)
            encode_recommendation(
                Recommendation(rec_id_for("e"), "u", "e", items, "v", int(time.time() * 1000))
            )
    res.seconds["rank+serialize"] = time.perf_counter() - start
    res.what["rank+serialize"] = "ranker.rank + events.encode_recommendation (JSON)"

    say("stage: produce ...")
    res.seconds["produce"] = _produce_stage(settings, messages)
    res.what["produce"] = (
        f"KafkaProducer (worker's settings: acks=all, linger 5 ms) send + flush per batch "
        f"of {settings.batch_max_events} to a scratch topic"
    )
    return res


def _store_stage(
    settings: Settings,
    model: ServingModel,
    records: Sequence[Record],
    tmp: Path,
    res: StageResult,
) -> tuple[list[OutboxMessage], RecordingEncoder, RecordingIndex]:
    timer = Timer()
    encoder = RecordingEncoder(model.encoder)
    index = RecordingIndex(model.index)
    db = tmp / "stage-store.db"
    pipeline = Pipeline(settings, encoder, index, model.files.meta.version)  # type: ignore[arg-type]
    messages: list[OutboxMessage] = []
    with Store(f"sqlite:///{db}", settings.group_id) as store:
        store.migrate()
        reader = TimedStore(store, timer)
        claimed = store.claim_partitions(settings.events_topic, range(PARTITIONS))
        generations = {p: g for p, (g, _) in claimed.items()}
        start = time.perf_counter()
        for batch in chunks(records, settings.batch_max_events):
            write: BatchWrite
            write, _ = pipeline.process(batch, reader, generations)  # type: ignore[arg-type]
            with timer("store: commit_batch"):
                stored = store.commit_batch(write)
            with timer("store: delete_outbox"):
                store.delete_outbox([m.id for m in stored if m.id])
            messages.extend(stored)
            res.batches += 1
        res.pipeline_in_process_s = time.perf_counter() - start
    res.detail = dict(timer.seconds)
    res.seconds["store"] = sum(timer.seconds.values())
    res.what["store"] = (
        "Store.applied + load_users + commit_batch + delete_outbox of the pipeline's batches "
        "(fresh SQLite file, WAL)"
    )
    return messages, encoder, index


def _produce_stage(settings: Settings, messages: Sequence[OutboxMessage]) -> float:
    create_topics(settings, [SCRATCH_TOPIC], PARTITIONS)
    producer = make_producer(settings)
    try:
        # Warm up the connection and the topic's metadata outside the timing.
        producer.send(SCRATCH_TOPIC, key=b"warmup", value=b"{}").get(timeout=30)
        start = time.perf_counter()
        for batch in chunks(messages, settings.batch_max_events):
            futures = [
                producer.send(SCRATCH_TOPIC, key=m.key, value=m.value, headers=list(m.headers))
                for m in batch
            ]
            producer.flush(timeout=30)
            for fut in futures:
                fut.get(timeout=0)
        return time.perf_counter() - start
    finally:
        producer.close(timeout=5)


# -- report --------------------------------------------------------------------------------------
def fmt(x: float, digits: int = 0) -> str:
    """A number, or an em dash for NaN."""
    return "—" if x != x else f"{x:,.{digits}f}"


def ms(x: float) -> str:
    """Seconds as milliseconds."""
    return fmt(1000 * x, 1)


def worker_run_rows(run: RunResult) -> list[str]:
    """Table rows of one worker run."""
    claimed = run.t_claimed - run.t_start
    batches, mean = run.batches()
    return [
        f"| {run.name} | {run.received:,}/{run.events:,} | {fmt(batches)} ({fmt(mean)}) | "
        f"{fmt(run.steady_rate)} | "
        f"{fmt(run.rate_since(run.t_start))} | {fmt(run.rate_since(run.t_claimed))} | "
        f"{fmt(claimed, 1)} | {fmt(run.t_first - run.t_start, 1)} | "
        f"{fmt(run.rate_target) if run.rate_target else '—'} |"
    ]


def latency_rows(run: RunResult) -> list[str]:
    """Latency rows of one worker run, exact from records and bucketed from the histogram."""
    rows = []
    for label, values in (
        ("input ts → `generated_at` (after search, before DB commit)", run.lat_gen),
        ("input ts → output record ts (producer send, after DB commit)", run.lat_send),
        ("input ts → received by the benchmark's consumer", run.lat_recv),
    ):
        rows.append(
            f"| {run.name} | {label} | {len(values):,} | {ms(pct(values, 50))} | "
            f"{ms(pct(values, 99))} | {ms(max(values) if values else float('nan'))} |"
        )
    if run.metrics is not None:
        hist = run.metrics.event_to_rec_seconds
        count = sample_sums(hist, "_count").get("", 0.0)
        p50 = histogram_quantile(hist, 0.5)
        p99 = histogram_quantile(hist, 0.99)
        rows.append(
            f"| {run.name} | worker histogram `streamrec_event_to_recommendation_seconds` "
            f"(input ts → broker ack; bucket bounds) | {count:,.0f} | "
            f"{ms(p50[0])} to {ms(p50[1])} | {ms(p99[0])} to {ms(p99[1])} | — |"
        )
    return rows


def worker_stage_table(runs: Sequence[RunResult]) -> list[str]:
    """Where each run's time went, from the worker's stage histograms: ms/batch and µs/event."""
    cols = []
    for run in runs:
        if run.metrics is None:
            continue
        sums = sample_sums(run.metrics.stage_seconds, "_sum", "stage")
        batches = sample_sums(run.metrics.batch_size, "_count").get("", 0.0)
        records = sample_sums(run.metrics.batch_size, "_sum").get("", 0.0)
        wall = run.t_last - run.t_claimed
        sums["untimed"] = wall - sum(sums.values())
        sums["wall"] = wall
        cols.append((run.name, sums, batches, records))
    head = "| stage | " + " | ".join(f"{name}: ms/batch | µs/event | share" for name, *_ in cols)
    lines = [head + " |", "|---|" + "---:|---:|---:|" * len(cols)]
    labels = {
        "untimed": "untimed: poll, Record copies, serialize, Kafka commit, catalog poll, "
        "idle (paced), benchmark consumer (GIL)",
        "rank": "rank (fused ranking: candidates incl. encode + search, fusion, exploration)",
        "wall": "**wall, partitions claimed → last output**",
    }
    stages = ("decode", "store", "encode", "search", "rank", "publish", "untimed", "wall")
    for stage in stages:
        cells = []
        for _, sums, batches, records in cols:
            sec = sums.get(stage, 0.0)
            cells.append(
                f"{fmt(1e3 * sec / batches, 1) if batches else '—'} | "
                f"{fmt(1e6 * sec / records, 0) if records else '—'} | "
                f"{fmt(100 * sec / sums['wall'], 0)} %"
            )
        lines.append(f"| {labels.get(stage, stage)} | " + " | ".join(cells) + " |")
    return lines


def stage_rows(stages: StageResult, worker_rate: float) -> tuple[list[str], list[str]]:
    """Per-stage table rows and the summary lines under it."""
    n = stages.events
    rates = {k: n / s for k, s in stages.seconds.items() if s > 0}
    serial = sum(stages.seconds.values())
    rows = []
    for name, s in stages.seconds.items():
        rows.append(
            f"| {name} | {stages.what[name]} | {fmt(rates.get(name, float('nan')))} | "
            f"{fmt(1e6 * s / n, 0)} | {fmt(100 * s / serial, 0)} % |"
        )
    slowest = min(rates, key=rates.__getitem__)
    bound = n / serial
    in_process = n / stages.pipeline_in_process_s if stages.pipeline_in_process_s else float("nan")
    notes = [
        f"- slowest stage: **{slowest}** at {fmt(rates[slowest])} events/s.",
        f"- whole worker (drain, steady) / slowest stage = {fmt(worker_rate)} / "
        f"{fmt(rates[slowest])} = **{worker_rate / rates[slowest]:.2f}**.",
        f"- serial bound (one thread runs every stage in turn: n / Σ stage seconds) = "
        f"{fmt(bound)} events/s; whole worker / serial bound = **{worker_rate / bound:.2f}**.",
        f"- `Pipeline.process` + `commit_batch` + `delete_outbox` in process, no Kafka "
        f"({stages.batches} batches): {fmt(in_process)} events/s.",
        "- store breakdown: "
        + ", ".join(
            f"{k.removeprefix('store: ')} {1e6 * v / n:.0f} µs/event"
            for k, v in stages.detail.items()
        )
        + ".",
    ]
    return rows, notes


def write_report(
    path: Path,
    args: argparse.Namespace,
    info: dict[str, str],
    settings: Settings,
    model: ServingModel,
    produce_s: float,
    runs: list[RunResult],
    stages: StageResult,
) -> str:
    """Write the Markdown report and return it."""
    meta = model.files.meta
    drain = runs[0]
    db = "temp SQLite file (fresh)" if args.db_url is None else settings.safe_db_url()
    lines = [
        "# Worker throughput (`benchmarks/throughput.py`)",
        "",
        f"- command: `{' '.join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])}`",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"load average at start {info['load']} (the machine is shared)",
        f"- libraries: {info['versions']}",
        f"- settings: {args.events:,} simulated events, {PARTITIONS} partitions, "
        f"batch_max_events {settings.batch_max_events}, poll_timeout_ms "
        f"{settings.poll_timeout_ms}, ranking {settings.ranking}, "
        f"encoder_threads {settings.encoder_threads}, top_k "
        f"{settings.top_k}, hnsw ef_search {settings.hnsw_ef_search}, history_max_len "
        f"{settings.history_max_len}",
        f"- model: {meta.version} (dim {meta.dim}, max_len {meta.max_len}, "
        f"{meta.num_items} items); worker database: `{db}`; broker: embedded tansu (memory), "
        "same machine",
        f"- input pre-produced with `traffic.produce_events` in {produce_s:.1f} s "
        f"({args.events / produce_s:,.0f} events/s)",
        "",
        "## Whole worker",
        "",
        "Drain: every event is in the topic before the worker starts. Paced: events produced "
        "while the worker runs, by another process. events/s counts recommendations received "
        "by a plain consumer (all partitions assigned; records counted, not end offsets).",
        "",
        "| run | received | batches (mean size) | events/s after the first batch "
        "| events/s, worker start → last | events/s, partitions claimed → last "
        "| s to claim partitions | s to first output "
        "| paced rate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines += worker_run_rows(run)
    lines += [
        "",
        "## Event → recommendation latency",
        "",
        "Input ts is the input record's Kafka timestamp (CreateTime, stamped by the producer at "
        "`send`). Drain latencies include the time events waited in the backlog, so they grow "
        "with the position in it; the paced run shows the unqueued latency.",
        "",
        "| run | measured | n | p50 ms | p99 ms | max ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines += latency_rows(run)
    lines += [
        "",
        "## Where the worker's time went (its own stage histograms)",
        "",
        "`store` is the pipeline's dedupe read + `load_users` + fold, plus `commit_batch`; "
        "`publish` is send + flush + ack check + `delete_outbox`.",
        "",
        *worker_stage_table(runs),
        "",
        "## Each stage alone (same events, same process, worker stopped)",
        "",
        "| stage | what is timed | events/s | µs/event | share of Σ |",
        "|---|---|---:|---:|---:|",
    ]
    rows, notes = stage_rows(stages, drain.steady_rate)
    lines += [*rows, "", *notes]
    errors = [f"- {r.name}: {r.error}" for r in runs if r.error]
    if errors:
        lines += ["", "## Problems", "", *errors]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    from assemble import assemble

    assemble()
    return text


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=5000, help="events of the drain run")
    p.add_argument("--model", type=Path, default=None, help="model dir (default: train one)")
    p.add_argument("--db-url", default=None, help="worker database (default: temp SQLite file)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/THROUGHPUT.md"))
    p.add_argument("--batch-max-events", type=int, default=None, help="default: Settings'")
    p.add_argument(
        "--ranking",
        choices=["encoder", "fused"],
        default="encoder",
        help="worker ranking; 'encoder' matches the encode/search stages timed alone",
    )
    p.add_argument("--paced-seconds", type=float, default=20.0, help="0 skips the paced run")
    p.add_argument(
        "--paced-fraction",
        type=float,
        nargs="+",
        default=[0.5, 0.2],
        help="paced runs, each at this fraction of the drain throughput",
    )
    p.add_argument("--timeout-s", type=float, default=120.0, help="per worker run")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run everything; return the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="streamrec-throughput-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = ensure_model(args.model, tmp)
        with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
            say(f"broker {broker.bootstrap}")
            settings = load_settings(
                bootstrap_servers=broker.bootstrap,
                model_dir=model_dir,
                db_url=args.db_url or f"sqlite:///{tmp / 'worker.db'}",
                metrics_port=0,
                batch_max_events=args.batch_max_events,
                ranking=args.ranking,
                log_level="WARNING",
            )
            return _benchmark(args, info, settings, broker, tmp)


def _benchmark(
    args: argparse.Namespace,
    info: dict[str, str],
    settings: Settings,
    broker: EmbeddedBroker,
    tmp: Path,
) -> int:
    ensure_topics(settings, partitions=PARTITIONS)
    sim = Simulator(SimConfig(seed=1))
    produce_catalog(broker.bootstrap, settings.items_topic, sim.catalog())
    model = load_serving_model(settings)
    events: list[Event] = list(sim.events(args.events))
    say(f"producing {len(events)} events before the worker starts ...")
    start = time.perf_counter()
    produce_events(broker.bootstrap, settings.events_topic, events)
    produce_s = time.perf_counter() - start
    records, poll_s = read_back(broker.bootstrap, settings.events_topic, len(events), 60)
    input_ts = input_timestamps(records)

    out_consumer = assigned_consumer(broker.bootstrap, settings.recs_topic)
    runs: list[RunResult] = []
    try:
        say(f"drain run: {len(events)} events ...")
        drain = run_worker(settings, model, out_consumer, set(input_ts), "drain", args.timeout_s)
        compute_latencies(drain, input_ts)
        runs.append(drain)
        say(f"drain: {drain.received} received, {drain.steady_rate:,.0f} events/s steady")
        if drain.error:
            say(f"drain run problem: {drain.error}")
        produced = len(events)
        for i, fraction in enumerate(args.paced_fraction if args.paced_seconds > 0 else []):
            if drain.steady_rate != drain.steady_rate:
                break
            rate = max(1.0, fraction * drain.steady_rate)
            paced = paced_run(
                settings, model, out_consumer, rate, args.paced_seconds, 30.0, seed=2 + i
            )
            paced.name = f"paced {100 * fraction:.0f} %"
            produced += paced.events
            # The paced events' timestamps are known once produced: read the whole topic back.
            everything, _ = read_back(broker.bootstrap, settings.events_topic, produced, 60)
            compute_latencies(paced, input_timestamps(everything))
            runs.append(paced)
            p50, p99 = pct(paced.lat_recv, 50), pct(paced.lat_recv, 99)
            say(f"{paced.name}: {paced.received} received; p50 {p50:.3f} s, p99 {p99:.3f} s")
    finally:
        out_consumer.close()
    stages = stage_benchmarks(settings, model, records, poll_s, tmp)
    text = write_report(args.out, args, info, settings, model, produce_s, runs, stages)
    print(text)
    say(f"wrote {args.out}")
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
