"""Each stage of the event path alone, for ``throughput.py``: the same events, the worker stopped.

poll (timed by ``throughput_worker.read_back``), decode, store (dedupe read + ``load_users`` +
``commit_batch`` + outbox delete, fresh database), encode, search, rank + serialize, produce.
Not a script: ``throughput.py`` imports it (this folder is on ``sys.path`` then).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from harness import PARTITIONS, Timer, say

from streamrec.core.events import Recommendation, rec_id_for
from streamrec.io.clients import create_topics, make_producer
from streamrec.io.codec import decode_event, encode_recommendation
from streamrec.ops.settings import Settings
from streamrec.ranking.encoder import Encoder
from streamrec.ranking.index import ItemIndex
from streamrec.ranking.rank import rank
from streamrec.state.batch import BatchWrite, OutboxMessage
from streamrec.state.store import Store
from streamrec.worker.serving import ServingModel
from streamrec.worker.step import Pipeline, Record

SCRATCH_TOPIC = "streamrec.bench.scratch"


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
