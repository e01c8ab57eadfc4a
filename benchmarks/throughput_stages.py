"""Each stage of the event path alone, for ``throughput.py``: the same events, the worker stopped.

The stages of the default (fused) path: decode, state transaction, encoder, ANN search,
fusion/rank, publish (``poll`` is timed by ``throughput_worker.read_records``).

1. A recording pass: ``Pipeline.process`` with a fused ``Ranker`` over wrappers that record
   every encoder and index search call, on a fresh SQLite store; both start from the warm-up
   the worker started from (``throughput_warm.py``); the store's reads, ``commit_batch`` and
   ``delete_outbox`` are timed (the state transaction).
2. The encoder and the ANN search alone: the recorded calls replayed on the real encoder and
   index.
3. Fusion/rank alone: a second pass with another ``Ranker`` (restored from the same warm-up)
   whose encoder and index search return the recorded results at no cost (state from memory,
   the same warm-up): what is left of the
   ranking is observing the events (trending, co-visitation, new-item vectors written to the
   index), the other candidate sources, fusion and exploration.
4. Publish: the pass's outbox rows sent to a scratch topic, a flush per batch (the worker's
   producer settings), plus the pass's ``delete_outbox``.

Not a script: ``throughput.py`` imports it (this folder is on ``sys.path`` then).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from harness import PARTITIONS, Timer, say
from throughput_warm import commit_warm, restore_ranker

from streamrec.core.events import CatalogOp
from streamrec.core.history import UserState
from streamrec.io.clients import create_topics, make_output_producer
from streamrec.io.codec import decode_event
from streamrec.ops.settings import Settings
from streamrec.ranking.encoder import Encoder
from streamrec.ranking.index import ItemIndex
from streamrec.ranking.ranker import Ranker, RankingConfig
from streamrec.state.batch import AppliedEvent, OutboxMessage
from streamrec.state.memory import MemoryStateReader
from streamrec.state.store import Store
from streamrec.worker.serving import ServingModel
from streamrec.worker.step import Pipeline, Record

SCRATCH_TOPIC = "streamrec.bench.scratch"


class RecordingEncoder:
    """Passes through to the real encoder; keeps each call's histories and result."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.max_len = inner.max_len
        self.calls: list[tuple[list[np.ndarray], np.ndarray]] = []

    def encode(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Encode and record."""
        out = self.inner.encode(histories)
        self.calls.append((list(histories), out))
        return out


# the index's search entry points, whatever the ranker calls (recorded, replayed)
SEARCH_METHODS = ("search", "search_labels")
Call = tuple[str, tuple[Any, ...], dict[str, Any], Any]


class RecordingIndex:
    """Passes through to the real index; keeps each search call's inputs and result."""

    def __init__(self, inner: ItemIndex) -> None:
        self.inner = inner
        self.calls: list[Call] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in SEARCH_METHODS:
            return attr

        def recorded(*args: Any, **kwargs: Any) -> Any:
            found = self._search(name, attr, args, kwargs)
            self.calls.append((name, args, kwargs, found))
            return found

        return recorded

    def _search(self, name: str, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return method(*args, **kwargs)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.inner


class ReplayEncoder:
    """Returns the recorded encoder results in order (no computation)."""

    def __init__(self, recorded: RecordingEncoder) -> None:
        self.dim = recorded.dim
        self.max_len = recorded.max_len
        self._results = iter([out for _, out in recorded.calls])

    def encode(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """The next recorded result."""
        return next(self._results)


class ReplayIndex(RecordingIndex):
    """The real index, except that its search calls return the recorded results in order."""

    def __init__(self, inner: ItemIndex, recorded: RecordingIndex) -> None:
        super().__init__(inner)
        self._results = iter(recorded.calls)

    def _search(self, name: str, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        recorded_name, *_, found = next(self._results)
        if recorded_name != name:
            raise RuntimeError(f"replay: {name} called where {recorded_name} was recorded")
        return found


class TimedStore:
    """The reads the pipeline makes, timed."""

    def __init__(self, store: Store, timer: Timer) -> None:
        self.store = store
        self.timer = timer

    def applied(self, event_ids: Sequence[str]) -> set[str]:
        """Timed ``Store.applied``."""
        with self.timer("state: applied (dedupe read)"):
            return self.store.applied(event_ids)

    def load_users(self, user_ids: Sequence[str]) -> dict[str, Any]:
        """Timed ``Store.load_users``."""
        with self.timer("state: load_users"):
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
    queries: np.ndarray | None = None  # the encoder's user vectors (recall queries)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def fresh_ranker(
    settings: Settings, model: ServingModel, encoder: Any, index: Any, catalog: Iterable[CatalogOp]
) -> Ranker:
    """A fused ranker as the worker builds it, which has seen the catalog's records."""
    ranker = Ranker(
        encoder, index, RankingConfig.from_settings(settings), trained=model.files.item_ids
    )
    for op in catalog:
        ranker.observe_catalog(op)
    return ranker


def pipeline_for(settings: Settings, model: ServingModel, ranker: Ranker, index: Any) -> Pipeline:
    """The worker's pipeline (same limits) around ``ranker``."""
    return Pipeline(
        settings,
        ranker.encoder,
        index,
        model.files.meta.version,
        max_future_ms=settings.max_event_future_ms,
        max_age_ms=settings.max_event_age_ms or None,
        ranker=ranker,
    )


def stage_benchmarks(
    settings: Settings,
    model: ServingModel,
    records: Sequence[Record],
    poll_s: float,
    catalog: Any,
    warm: tuple[Sequence[AppliedEvent], dict[str, UserState]],
    tmp: Path,
) -> StageResult:
    """Each stage alone, on the records the drain consumed; ``catalog()`` yields its ops.

    Both passes start from the warm-up the worker started from (``warm``: the applied events
    and the users' states), in the store or in memory, the ranker restored from it.
    """
    res = StageResult(events=len(records))
    res.seconds["poll"] = poll_s
    res.what["poll"] = "plain KafkaConsumer (assigned, no group) reading the input topic"

    say("stage: decode ...")
    start = time.perf_counter()
    for r in records:
        decode_event(r.value, r.key, settings.max_event_bytes, settings.max_id_len)
    res.seconds["decode"] = time.perf_counter() - start
    res.what["decode"] = "codec.decode_event over the raw values (+ key check)"

    say("stage: state transaction (recording pass on a fresh SQLite file) ...")
    encoder = RecordingEncoder(model.encoder)
    index = RecordingIndex(model.index)
    ranker = fresh_ranker(settings, model, encoder, index, catalog())
    restore_ranker(ranker, warm[0])
    messages = _state_pass(settings, model, ranker, index, records, warm, tmp, res)

    say("stage: encoder ...")
    start = time.perf_counter()
    for histories, _ in encoder.calls:
        model.encoder.encode(histories)
    res.seconds["encoder"] = time.perf_counter() - start
    res.what["encoder"] = "OnnxEncoder.encode on the fused ranking's batches of histories"
    if encoder.calls:
        res.queries = np.concatenate([out for _, out in encoder.calls])

    say("stage: ANN search ...")
    start = time.perf_counter()
    for name, args, kwargs, _ in index.calls:
        getattr(model.index, name)(*args, **kwargs)
    res.seconds["ANN search"] = time.perf_counter() - start
    methods = ", ".join(sorted({c[0] for c in index.calls}))
    res.what["ANN search"] = (
        f"the ranking's ItemIndex search calls replayed ({methods}): "
        f"k = candidate_pool {settings.candidate_pool}, with the exclusions (ef_search "
        f"{settings.hnsw_ef_search})"
    )

    say("stage: fusion/rank (replayed encoder and search) ...")
    res.seconds["fusion/rank"] = _rank_pass(
        settings, model, encoder, index, records, catalog(), warm
    )
    res.what["fusion/rank"] = (
        "Ranker.observe_batch + recommend_batch with the encoder and search replayed at no cost: "
        "trending, co-visitation, new-item vectors, fusion, exploration (+ JSON encoding)"
    )

    say("stage: publish ...")
    res.seconds["publish"] = _produce_stage(settings, messages) + res.detail.get(
        "publish: delete_outbox", 0.0
    )
    res.what["publish"] = (
        f"the worker's output producer ({settings.output_client}: acks=all, linger 5 ms) "
        "send + flush per batch "
        f"of {settings.batch_max_events} to a scratch topic, + Store.delete_outbox"
    )
    return res


def _state_pass(
    settings: Settings,
    model: ServingModel,
    ranker: Ranker,
    index: RecordingIndex,
    records: Sequence[Record],
    warm: tuple[Sequence[AppliedEvent], dict[str, UserState]],
    tmp: Path,
    res: StageResult,
) -> list[OutboxMessage]:
    timer = Timer()
    pipeline = pipeline_for(settings, model, ranker, index)
    messages: list[OutboxMessage] = []
    db = tmp / "stage-store.db"
    db.unlink(missing_ok=True)
    commit_warm(settings, f"sqlite:///{db}", warm[0], warm[1], claim=True)
    with Store(f"sqlite:///{db}", settings.group_id) as store:
        reader = TimedStore(store, timer)
        claimed = store.claim_partitions(settings.events_topic, range(PARTITIONS))
        generations = {p: g for p, (g, _) in claimed.items()}
        start = time.perf_counter()
        for batch in chunks(records, settings.batch_max_events):
            write, _ = pipeline.process(batch, reader, generations)  # type: ignore[arg-type]
            with timer("state: commit_batch"):
                stored = store.commit_batch(write)
            with timer("publish: delete_outbox"):
                store.delete_outbox([m.id for m in stored if m.id])
            messages.extend(stored)
            res.batches += 1
        res.pipeline_in_process_s = time.perf_counter() - start
    res.detail = dict(timer.seconds)
    res.seconds["state transaction"] = sum(
        v for k, v in timer.seconds.items() if k.startswith("state:")
    )
    res.what["state transaction"] = (
        "Store.applied + load_users + commit_batch (users, applied ids, outbox, offsets: one "
        "transaction) of the pipeline's batches, fresh SQLite file (WAL)"
    )
    return messages


def _rank_pass(
    settings: Settings,
    model: ServingModel,
    recorded_encoder: RecordingEncoder,
    recorded_index: RecordingIndex,
    records: Sequence[Record],
    catalog: Iterable[CatalogOp],
    warm: tuple[Sequence[AppliedEvent], dict[str, UserState]],
) -> float:
    index = ReplayIndex(model.index, recorded_index)
    ranker = fresh_ranker(settings, model, ReplayEncoder(recorded_encoder), index, catalog)
    restore_ranker(ranker, warm[0])
    pipeline = pipeline_for(settings, model, ranker, index)
    state = MemoryStateReader()
    state.users.update(warm[1])
    state.applied_ids.update(a.event.event_id for a in warm[0])
    generations = dict.fromkeys(range(PARTITIONS), 1)
    seconds = 0.0
    for batch in chunks(records, settings.batch_max_events):
        start = time.perf_counter()
        write, stats = pipeline.process(batch, state, generations)
        # all of process() but decode and the state reads: ranking + the JSON encoding
        seconds += (
            time.perf_counter()
            - start
            - sum(v for k, v in stats.stage_seconds.items() if k != "rank")
        )
        state.users.update(write.users)
        state.applied_ids.update(a.event.event_id for a in write.applied)
    return seconds


def _produce_stage(settings: Settings, messages: Sequence[OutboxMessage]) -> float:
    """Send + flush per batch with the worker's output client (``output_client``)."""
    create_topics(settings, [SCRATCH_TOPIC], PARTITIONS)
    producer = make_output_producer(settings)
    failed: list[BaseException] = []
    try:
        # Warm up the connection and the topic's metadata outside the timing.
        producer.send(SCRATCH_TOPIC, key=b"warmup", value=b"{}").add_errback(failed.append)
        producer.flush(timeout=30)
        start = time.perf_counter()
        for batch in chunks(messages, settings.batch_max_events):
            for m in batch:
                future = producer.send(
                    SCRATCH_TOPIC, key=m.key, value=m.value, headers=list(m.headers)
                )
                future.add_errback(failed.append)
            producer.flush(timeout=30)
        seconds = time.perf_counter() - start
    finally:
        producer.close(timeout=5)
    if failed:
        raise RuntimeError(f"publish stage: {len(failed)} sends failed, e.g. {failed[0]!r}")
    return seconds
