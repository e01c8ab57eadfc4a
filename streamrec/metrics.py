"""Every Prometheus metric of the worker, defined once, here.

Names follow Prometheus conventions: ``streamrec_`` prefix, base units (seconds, bytes),
``_total`` for counters. Label values are bounded (event type, outcome, reason code, stage,
topic partition number); never user or item ids. A ``Metrics`` object owns its registry so that
several workers (or tests) in one process do not share counters.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

# The *_created series double the series count and no dashboard of ours uses them.
disable_created_metrics()

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
STAGES = ("decode", "store", "encode", "search", "publish")
OUTCOMES = ("recommended", "duplicate", "dead_letter", "fenced")


class Metrics:
    """The worker's metrics on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
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
            "The loaded model: version, dimension, max history length.",
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "streamrec_model_load_duration_seconds",
            "Seconds it took to load the model and build the index.",
            registry=r,
        )
        self.outbox_pending = Gauge(
            "streamrec_outbox_pending_messages",
            "Messages committed to the outbox but not yet acknowledged by the broker.",
            registry=r,
        )
        self.errors = Counter(
            "streamrec_errors_total",
            "Errors the worker recovered from, by component (broker, store, fenced).",
            ["component"],
            registry=r,
        )
        self.up = Gauge(
            "streamrec_ready",
            "1 when the worker has partitions, a model and a reachable database.",
            registry=r,
        )
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
