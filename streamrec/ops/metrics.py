"""Every Prometheus metric of the worker, defined once, here.

Names follow Prometheus conventions: ``streamrec_`` prefix, base units (seconds, bytes),
``_total`` for counters, ``_ratio`` for 0..1 shares. Label values are bounded (event type,
outcome, reason code, stage, topic, partition number); never user or item ids. A ``Metrics``
object owns its registry so that several workers (or tests) in one process do not share
counters.

Most metrics are updated by the worker as things happen. The rest are computed when Prometheus
scrapes, from sources the worker binds once (each a one-liner):

- ``sample_lag(consumer, partitions)``: consumer lag per partition from the high watermarks
  of the last fetch responses (the broker's end offsets for paused partitions; rate-limited:
  call it every loop iteration);
- ``bind_index(lambda: index)``: index size, deleted-but-not-compacted ratio;
- ``bind_new_items(lambda: count)``: new items searchable with an evidence or content vector
  (``streamrec.coldstart.NewItemVectors.searchable``, fused ranking only);
- ``index_refreshed()``: the index caught up with the catalog (or was rebuilt/swapped);
- ``snapshot_taken(created_at)``: an index snapshot was written or loaded (its age);
- ``observe_recommendations(observations)``: quality signals (see ``streamrec.ops.quality``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamrec.ops.quality import QualityTracker, RecObservation

# The *_created series double the series count and no dashboard of ours uses them.
disable_created_metrics()

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
STAGES = ("decode", "store", "encode", "search", "rank", "publish")
OUTCOMES = ("recommended", "applied", "duplicate", "dead_letter", "fenced")
# what fills a recommended slot: a candidate source (coldstart: the encoder's neighbours of the
# catalog centroid, for a user without known history), an exploration slot or the encoder alone
SLOT_SOURCES = ("ann", "trending", "covisit", "coldstart", "explore", "encoder")
ITEM_KINDS = ("trained", "new")
MODEL_REFUSAL_REASONS = ("checksum", "load", "dimension", "nan")  # model versions refused
# parts of the fused ranker's stream state (``Ranker.stream_state_sizes``)
STREAM_STATE_PARTS = ("trending_items", "covisit_users", "covisit_pairs")
LAG_INTERVAL_S = 5.0
# the loop must stay well inside max_poll_interval_ms while it asks for end offsets
LAG_TIMEOUT_MS = 1000


class IndexCounts(Protocol):
    """Live and deleted-but-not-compacted counts (``streamrec.index.IndexStats``)."""

    @property
    def live(self) -> int: ...

    @property
    def deleted(self) -> int: ...


class IndexLike(Protocol):
    """What the metrics read from the item index (``streamrec.index.ItemIndex``)."""

    def stats(self) -> IndexCounts: ...


class LagConsumer(Protocol):
    """The calls of a Kafka consumer that lag needs (kafka-python's ``KafkaConsumer``)."""

    def end_offsets(
        self, partitions: list[Any], timeout_ms: int | None = None
    ) -> Mapping[Any, int]: ...

    def highwater(self, partition: Any) -> int | None: ...

    def paused(self) -> Collection[Any]: ...

    def position(self, partition: Any, timeout_ms: int | None = None) -> int: ...


def index_counts(index: IndexLike) -> tuple[int, int]:
    """(live, deleted-but-still-in-the-graph) item counts of an index."""
    stats = index.stats()
    return int(stats.live), int(stats.deleted)


def consumer_lag(
    consumer: LagConsumer, partitions: Iterable[Any], timeout_ms: int = LAG_TIMEOUT_MS
) -> dict[int, int]:
    """Records behind the end of each partition: end offset - position, never negative.

    The end of a partition being fetched is the high watermark its last fetch response
    carried: no broker call, so sampling never holds up the poll loop (an ``end_offsets``
    request waits behind the connection's fetch, up to ``fetch_max_wait_ms``; every 5 s that
    showed in the paced latency's tail). A paused partition, or one not fetched yet, is
    asked for (its watermark would be stale: the lag of a paused partition grows).
    """
    tps = list(partitions)
    if not tps:
        return {}
    paused = set(consumer.paused())
    ends: dict[Any, int] = {}
    ask = []
    for tp in tps:
        mark = None if tp in paused else consumer.highwater(tp)
        if mark is None:
            ask.append(tp)
        else:
            ends[tp] = mark
    if ask:
        ends.update(consumer.end_offsets(ask, timeout_ms=timeout_ms))
    return {
        tp.partition: max(0, int(ends[tp]) - int(consumer.position(tp, timeout_ms=timeout_ms)))
        for tp in tps
    }


class Metrics:
    """The worker's metrics on one registry.

    Args:
        registry: a registry of its own by default.
        clock: seconds since the epoch (index refresh age, quality windows).
        quality: the quality tracker (windows of 10,000 recommendations / 15 min by default).
        lag_interval_s: ``sample_lag`` asks the broker for end offsets at most this often.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        quality: QualityTracker | None = None,
        lag_interval_s: float = LAG_INTERVAL_S,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock
        self.quality = quality if quality is not None else QualityTracker(clock)
        self.lag_interval_s = lag_interval_s
        self._lock = threading.Lock()
        self._lag: dict[int, int] = {}
        self._lag_due = 0.0
        self._index: Callable[[], IndexLike] | None = None
        self._new_items: Callable[[], int] | None = None
        self._stream_state: Callable[[], Mapping[str, tuple[int, int]]] | None = None
        self._index_refreshed_at: float | None = None
        self._snapshot_at: float | None = None
        self._signals_sent_at: float | None = None
        self._define(self.registry)
        self.registry.register(_ScrapeTimeCollector(self))

    def _define(self, r: CollectorRegistry) -> None:
        self.events_consumed = Counter(
            "streamrec_events_consumed_total",
            "Input events consumed, by event type and outcome.",
            ["type", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "streamrec_dead_letters_total",
            "Records sent to the dead-letter topic, by reason code and source topic.",
            ["reason", "topic"],
            registry=r,
        )
        self.recommendations_published = Counter(
            "streamrec_recommendations_published_total",
            "Recommendation messages acknowledged by the broker.",
            registry=r,
        )
        self.catalog_updates = Counter(
            "streamrec_catalog_updates_total",
            "Catalog records applied to the index, by operation.",
            ["op"],
            registry=r,
        )
        self.batch_size = Histogram(
            "streamrec_batch_size_records",
            "Records per processed batch.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=r,
        )
        self.stage_seconds = Histogram(
            "streamrec_stage_duration_seconds",
            "Time spent per batch in each stage of the event path.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.event_to_rec_seconds = Histogram(
            "streamrec_event_to_recommendation_seconds",
            "From the input record's Kafka timestamp to the broker's ack of its recommendation.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.index_items = Gauge(
            "streamrec_index_items",
            "Items searchable in the HNSW index (excludes deleted ones).",
            registry=r,
        )
        self.model_info = Info(
            "streamrec_model",
            "The served model: version, repository version, dimension, max history length.",
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "streamrec_model_load_duration_seconds",
            "Seconds it took to load the served model and build its index (at start or reload).",
            registry=r,
        )
        self.model_reloads = Counter(
            "streamrec_model_reloads_total",
            "New model versions swapped in from the model repository.",
            registry=r,
        )
        self.model_reload_failures = Counter(
            "streamrec_model_reload_failures_total",
            "Model versions refused, by reason (checksum, load, dimension, nan).",
            ["reason"],
            registry=r,
        )
        self.index_compactions = Counter(
            "streamrec_index_compactions_total",
            "HNSW graphs rebuilt without their deleted items and swapped in.",
            registry=r,
        )
        self.snapshots_written = Counter(
            "streamrec_index_snapshots_written_total",
            "Index snapshots written (periodic and at shutdown).",
            registry=r,
        )
        self.snapshots_rejected = Counter(
            "streamrec_index_snapshots_rejected_total",
            "Index snapshots not used at start, by reason (corrupt, format, foreign, offsets).",
            ["reason"],
            registry=r,
        )
        self.snapshot_write_seconds = Gauge(
            "streamrec_index_snapshot_write_duration_seconds",
            "Seconds the last index snapshot took to write.",
            registry=r,
        )
        self.snapshot_load_seconds = Gauge(
            "streamrec_index_snapshot_load_duration_seconds",
            "Seconds it took to load the index snapshot used at start.",
            registry=r,
        )
        self.outbox_pending = Gauge(
            "streamrec_outbox_pending_messages",
            "Rows in the outbox table: messages committed but not yet delivered and deleted "
            "(every partition; counted every 5 s).",
            registry=r,
        )
        self.errors = Counter(
            "streamrec_errors_total",
            "Errors the worker recovered from, by component "
            "(broker, store, conflict, fenced, lag, snapshot).",
            ["component"],
            registry=r,
        )
        self.signal_deltas = Counter(
            "streamrec_signal_deltas_total",
            "Global-signal deltas (trending and co-visitation counts of one partition's offset "
            "range), by outcome: published by this worker, or read and applied, duplicate "
            "(already counted), overlap (straddles what was counted: skipped) or bad.",
            ["outcome"],
            registry=r,
        )
        self.signal_bytes = Counter(
            "streamrec_signal_bytes_total",
            "Bytes of global-signal records sent (out) and read (in).",
            ["direction"],
            registry=r,
        )
        self.stream_state_restored = Counter(
            "streamrec_stream_state_restored_events_total",
            "Applied events read back from the database into the fused ranker's stream "
            "state (trending, co-visitation) when partitions were claimed.",
            registry=r,
        )
        self.applied_events_pruned = Counter(
            "streamrec_applied_events_pruned_total",
            "Applied event ids deleted from the dedupe table past its retention window.",
            registry=r,
        )
        self.up = Gauge(
            "streamrec_ready",
            "1 when the worker has partitions, a model and a reachable database.",
            registry=r,
        )
        self.arm_events = Counter(
            "streamrec_arm_events_total",
            "In an A/B test: input events applied, by the user's arm and event type.",
            ["arm", "type"],
            registry=r,
        )
        self.arm_recommendations = Counter(
            "streamrec_arm_recommendations_total",
            "In an A/B test: recommendations made, by the user's arm.",
            ["arm"],
            registry=r,
        )
        self.new_item_vectors = Counter(
            "streamrec_new_item_vectors_total",
            "Evidence vectors written to the index for items the model was not trained on.",
            registry=r,
        )
        self.recommended_slots = Counter(
            "streamrec_recommended_slots_total",
            "Slots of the recommendations made, by what filled them (candidate source, explore "
            "or encoder) and item kind (trained or new).",
            ["source", "item"],
            registry=r,
        )
        for reason in MODEL_REFUSAL_REASONS:
            self.model_reload_failures.labels(reason=reason)
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
        for source in SLOT_SOURCES:
            for kind in ITEM_KINDS:
                self.recommended_slots.labels(source=source, item=kind)

    # -- consumer lag ------------------------------------------------------------------------
    def set_lag(self, lag: Mapping[int, int]) -> None:
        """Replace the lag of every partition (partitions not given are no longer ours)."""
        with self._lock:
            self._lag = {int(p): int(v) for p, v in lag.items()}

    def sample_lag(self, consumer: LagConsumer, partitions: Iterable[Any]) -> bool:
        """Refresh the lag from the broker's end offsets if ``lag_interval_s`` has passed.

        Partitions we no longer own are dropped at once. Never raises: a failed sample is
        counted in ``streamrec_errors_total{component="lag"}`` and retried next interval.

        Returns:
            True when a sample was taken.
        """
        tps = list(partitions)
        owned = {tp.partition for tp in tps}
        with self._lock:
            self._lag = {p: v for p, v in self._lag.items() if p in owned}
        now = time.monotonic()
        if now < self._lag_due:
            return False
        self._lag_due = now + self.lag_interval_s
        try:
            lag = consumer_lag(consumer, tps)
        except Exception as exc:  # monitoring must never stop the worker
            log.debug("consumer lag not sampled: %s", type(exc).__name__)
            self.errors.labels(component="lag").inc()
            return False
        self.set_lag(lag)
        return True

    # -- index -------------------------------------------------------------------------------
    def bind_index(self, source: Callable[[], IndexLike]) -> None:
        """Read index health at scrape time from ``source()`` (the index being served now)."""
        with self._lock:
            self._index = source
        self.index_items.set_function(lambda: float(index_counts(source())[0]))

    def bind_new_items(self, source: Callable[[], int]) -> None:
        """Read the searchable new items at scrape time from ``source()`` (must be O(1))."""
        with self._lock:
            self._new_items = source

    def bind_stream_state(self, source: Callable[[], Mapping[str, tuple[int, int]]]) -> None:
        """Read the fused ranker's stream-state sizes at scrape time: ``source()`` maps each
        part (``STREAM_STATE_PARTS``) to (entries held now, entries forgotten so far); O(1)."""
        with self._lock:
            self._stream_state = source

    def index_refreshed(self) -> None:
        """The index now reflects the catalog (caught up, rebuilt or swapped)."""
        with self._lock:
            self._index_refreshed_at = self.clock()

    def signals_merged(self, sent_at: float) -> None:
        """Another worker's delta, sent at ``sent_at`` (epoch seconds), was merged."""
        with self._lock:
            if self._signals_sent_at is None or sent_at > self._signals_sent_at:
                self._signals_sent_at = sent_at

    def snapshot_taken(self, created_at: float) -> None:
        """The index state of ``created_at`` is saved (a snapshot written, or loaded at start)."""
        with self._lock:
            self._snapshot_at = created_at

    # -- quality -----------------------------------------------------------------------------
    def observe_recommendations(self, observations: Iterable[RecObservation]) -> None:
        """Feed published recommendations to the quality windows, in order."""
        with self._lock:
            for obs in observations:
                self.quality.observe(obs)

    def collect_derived(self) -> Iterator[Metric]:
        """The metrics computed at scrape time (see ``_ScrapeTimeCollector``)."""
        with self._lock:
            lag = dict(self._lag)
            source = self._index
            refreshed = self._index_refreshed_at
            new_items = self._new_items
            snapshot_at = self._snapshot_at
            signals_at = self._signals_sent_at
            stream_state = self._stream_state
        live, deleted = index_counts(source()) if source is not None else (0, 0)

        fam = GaugeMetricFamily(
            "streamrec_consumer_lag_records",
            "Records between the worker's position and the end of each owned input partition.",
            labels=["partition"],
        )
        for partition in sorted(lag):
            fam.add_metric([str(partition)], lag[partition])
        yield fam
        yield _gauge(
            "streamrec_index_deleted_ratio",
            "Share of the index graph's items that are deleted, their places not yet taken by new "
            "items nor compacted away.",
            deleted / (live + deleted) if source is not None and live + deleted else None,
        )
        yield _gauge(
            "streamrec_index_refresh_age_seconds",
            "Seconds since the index last caught up with the catalog (or was rebuilt).",
            max(0.0, self.clock() - refreshed) if refreshed is not None else None,
        )
        yield _gauge(
            "streamrec_index_snapshot_age_seconds",
            "Seconds since the newest index snapshot this worker wrote or loaded was taken.",
            max(0.0, self.clock() - snapshot_at) if snapshot_at is not None else None,
        )
        yield _gauge(
            "streamrec_signals_staleness_seconds",
            "Seconds since the newest global-signal delta merged from another worker was sent "
            "(no sample before the first one).",
            max(0.0, self.clock() - signals_at) if signals_at is not None else None,
        )
        yield _gauge(
            "streamrec_new_items",
            "Items the model was not trained on that have an evidence or content vector and "
            "are searchable.",
            new_items() if new_items is not None else None,
        )
        yield from _stream_state_families(stream_state() if stream_state is not None else {})
        with self._lock:
            snap = self.quality.snapshot(live if source is not None else 0)
        yield _gauge(
            "streamrec_recommended_items",
            "Distinct items recommended within the quality window.",
            snap.recommended_items,
        )
        yield _gauge(
            "streamrec_catalog_coverage_ratio",
            "Distinct items recommended within the quality window / searchable items.",
            snap.coverage if source is not None else None,
        )
        yield _gauge(
            "streamrec_cold_start_ratio",
            "Share of the window's recommendations made for users with a short history.",
            snap.cold_start_share,
        )
        yield _gauge(
            "streamrec_exploration_ratio",
            "Share of the window's recommended slots filled by exploration.",
            snap.exploration_rate,
        )
        yield _gauge(
            "streamrec_clicked_item_mean_rank",
            "Mean 1-based rank of clicked items that were in the user's previous recommendation.",
            snap.clicked_rank_mean,
        )
        yield _gauge(
            "streamrec_click_hit_ratio",
            "Share of clicks (by users shown a recommendation) on a recommended item.",
            snap.click_hit_share,
        )


def _stream_state_families(sizes: Mapping[str, tuple[int, int]]) -> Iterator[Metric]:
    held = GaugeMetricFamily(
        "streamrec_stream_state_entries",
        "Entries of the fused ranker's in-memory stream state, by part (trending items, "
        "co-visitation users and neighbour pairs), each bounded by a setting.",
        labels=["part"],
    )
    forgotten = CounterMetricFamily(
        "streamrec_stream_state_forgotten",
        "Entries the fused ranker's stream state forgot to stay within its bounds, by part.",
        labels=["part"],
    )
    for part in STREAM_STATE_PARTS:
        if part in sizes:
            now, gone = sizes[part]
            held.add_metric([part], now)
            forgotten.add_metric([part], gone)
    yield held
    yield forgotten


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    """A label-less gauge family; no sample while ``value`` is None (nothing to say yet)."""
    fam = GaugeMetricFamily(name, doc)
    if value is not None:
        fam.add_metric([], float(value))
    return fam


class _ScrapeTimeCollector(Collector):
    """Lag, index health and quality: computed when scraped, from what the worker bound."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.collect_derived()
