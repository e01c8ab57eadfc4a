"""The scrape-time metrics: consumer lag, index health, quality; bounded labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamrec.ops.metrics import Metrics, consumer_lag, index_counts
from streamrec.ops.quality import RecObservation
from streamrec.ranking.compaction import Compactor
from streamrec.ranking.index import ItemIndex
from streamrec.testing import FakeClock


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


class FakeConsumer:
    def __init__(self, ends: dict[int, int], positions: dict[int, int]) -> None:
        self.ends = ends
        self.positions = positions
        self.calls = 0
        self.fail = False
        self.marks: dict[int, int] = {}  # high watermarks of the last fetch responses
        self.paused_set: set[Any] = set()

    def end_offsets(self, partitions: list[Any], timeout_ms: int | None = None) -> dict[Any, int]:
        self.calls += 1
        if self.fail:
            raise TimeoutError("broker away")
        return {tp: self.ends[tp.partition] for tp in partitions}

    def position(self, partition: Any, timeout_ms: int | None = None) -> int:
        return self.positions[partition.partition]

    def highwater(self, partition: Any) -> int | None:
        return self.marks.get(partition.partition)

    def paused(self) -> set[Any]:
        return self.paused_set


def test_consumer_lag_is_end_minus_position_never_negative() -> None:
    consumer = FakeConsumer({0: 100, 1: 5}, {0: 40, 1: 9})
    assert consumer_lag(consumer, [TP("t", 0), TP("t", 1)]) == {0: 60, 1: 0}
    assert consumer_lag(consumer, []) == {}


def test_fetched_partitions_take_their_high_watermark_paused_ones_ask_the_broker() -> None:
    consumer = FakeConsumer({0: 100, 1: 50}, {0: 40, 1: 45})
    consumer.marks = {0: 70, 1: 46}
    tps = [TP("t", 0), TP("t", 1)]
    assert consumer_lag(consumer, tps) == {0: 30, 1: 1}
    assert consumer.calls == 0, "no broker call while every partition is being fetched"
    consumer.paused_set = {tps[1]}  # paused: its watermark is stale, the broker is asked
    assert consumer_lag(consumer, tps) == {0: 30, 1: 5}
    assert consumer.calls == 1


def test_sample_lag_is_rate_limited_and_drops_revoked_partitions() -> None:
    metrics = Metrics(lag_interval_s=3600)
    consumer = FakeConsumer({0: 100, 1: 50}, {0: 40, 1: 45})
    assert metrics.sample_lag(consumer, [TP("t", 0), TP("t", 1)])
    s = _samples(metrics)
    assert s[("streamrec_consumer_lag_records", (("partition", "0"),))] == 60
    assert s[("streamrec_consumer_lag_records", (("partition", "1"),))] == 5
    assert not metrics.sample_lag(consumer, [TP("t", 1)])  # not due: no broker call
    assert consumer.calls == 1
    s = _samples(metrics)
    assert ("streamrec_consumer_lag_records", (("partition", "0"),)) not in s
    assert s[("streamrec_consumer_lag_records", (("partition", "1"),))] == 5


def test_a_failed_lag_sample_is_counted_not_raised() -> None:
    metrics = Metrics(lag_interval_s=0)
    consumer = FakeConsumer({0: 10}, {0: 0})
    consumer.fail = True
    assert not metrics.sample_lag(consumer, [TP("t", 0)])
    assert _samples(metrics)[("streamrec_errors_total", (("component", "lag"),))] == 1
    consumer.fail = False
    assert metrics.sample_lag(consumer, [TP("t", 0)])


def test_index_health_from_a_real_index() -> None:
    rng = np.random.default_rng(0)
    index = ItemIndex([f"i{n}" for n in range(8)], rng.normal(size=(8, 4)).astype(np.float32))
    index.remove("i0")
    index.remove("i1")
    index.upsert("new", None, available=True)  # takes a deleted item's place in the graph
    assert index_counts(index) == (7, 1)
    metrics = Metrics()
    metrics.bind_index(lambda: index)
    s = _samples(metrics)
    assert s[("streamrec_index_items", ())] == 7
    assert s[("streamrec_index_deleted_ratio", ())] == pytest.approx(1 / 8)


def test_index_counts_prefers_a_stats_method() -> None:
    @dataclass
    class Stats:
        live: int
        deleted: int

    class WithStats:
        size = 3

        def stats(self) -> Stats:
            return Stats(live=3, deleted=1)

    assert index_counts(WithStats()) == (3, 1)


def test_index_refresh_age_follows_the_clock() -> None:
    clock = FakeClock(1000.0)
    metrics = Metrics(clock=clock)
    assert ("streamrec_index_refresh_age_seconds", ()) not in _samples(metrics)
    metrics.index_refreshed()
    clock.advance(42)
    assert _samples(metrics)[("streamrec_index_refresh_age_seconds", ())] == 42


def test_snapshot_age_follows_the_clock_and_compaction_clears_the_deleted_ratio() -> None:
    clock = FakeClock(1000.0)
    metrics = Metrics(clock=clock)
    assert ("streamrec_index_snapshot_age_seconds", ()) not in _samples(metrics)
    metrics.snapshot_taken(990.0)  # a snapshot taken 10 s ago was loaded
    clock.advance(20)
    assert _samples(metrics)[("streamrec_index_snapshot_age_seconds", ())] == 30
    index = ItemIndex([f"i{n}" for n in range(40)], np.eye(40, dtype=np.float32))
    for n in range(20):
        index.remove(f"i{n}")
    metrics.bind_index(lambda: index)
    assert _samples(metrics)[("streamrec_index_deleted_ratio", ())] == 0.5
    assert Compactor(index, ratio=0.2, background=False).tick()
    assert _samples(metrics)[("streamrec_index_deleted_ratio", ())] == 0.0
    assert _samples(metrics)[("streamrec_index_items", ())] == 20


def test_quality_gauges() -> None:
    clock = FakeClock(0.0)
    metrics = Metrics(clock=clock)
    index = ItemIndex([f"i{n}" for n in range(10)], np.eye(10, dtype=np.float32))
    metrics.bind_index(lambda: index)
    s = _samples(metrics)
    assert s[("streamrec_catalog_coverage_ratio", ())] == 0
    assert ("streamrec_cold_start_ratio", ()) not in s  # nothing observed yet
    metrics.observe_recommendations(
        [
            RecObservation("u1", "click", "i9", 1, ("i0", "i1")),
            RecObservation("u1", "click", "i1", 4, ("i2", "i3"), explored=1),
        ]
    )
    s = _samples(metrics)
    assert s[("streamrec_recommended_items", ())] == 4
    assert s[("streamrec_catalog_coverage_ratio", ())] == pytest.approx(0.4)
    assert s[("streamrec_cold_start_ratio", ())] == pytest.approx(0.5)
    assert s[("streamrec_exploration_ratio", ())] == pytest.approx(0.25)
    assert s[("streamrec_clicked_item_mean_rank", ())] == 2
    assert s[("streamrec_click_hit_ratio", ())] == 1


def test_new_item_metrics() -> None:
    metrics = Metrics()
    s = _samples(metrics)
    assert ("streamrec_new_items", ()) not in s  # nothing bound: no sample (encoder ranking)
    assert s[("streamrec_new_item_vectors_total", ())] == 0
    slots = {labels for (name, labels) in s if name == "streamrec_recommended_slots_total"}
    assert len(slots) == 12  # every (source, item) pair exists from the start, at 0
    assert (("item", "new"), ("source", "explore")) in slots
    searchable = [3]
    metrics.bind_new_items(lambda: searchable[0])
    assert _samples(metrics)[("streamrec_new_items", ())] == 3
    searchable[0] = 1
    metrics.new_item_vectors.inc(2)
    s = _samples(metrics)
    assert s[("streamrec_new_items", ())] == 1
    assert s[("streamrec_new_item_vectors_total", ())] == 2


ALLOWED_LABELS = {
    "type",
    "outcome",
    "reason",
    "topic",
    "stage",
    "op",
    "component",
    "partition",
    "le",
    "version",
    "dim",
    "max_len",
    "source",
    "item",
    "part",
}


def test_labels_are_bounded_and_never_ids() -> None:
    metrics = Metrics()
    metrics.events_consumed.labels(type="click", outcome="recommended").inc()
    metrics.dead_letters.labels(reason="not_json", topic="t").inc()
    metrics.catalog_updates.labels(op="upsert").inc()
    metrics.errors.labels(component="store").inc()
    metrics.model_info.info({"version": "v1", "dim": "8", "max_len": "20"})
    metrics.set_lag({0: 1})
    metrics.recommended_slots.labels(source="covisit", item="new").inc()
    samples = _samples(metrics)
    labels = {k for (_, pairs) in samples for k, _ in pairs}
    assert labels <= ALLOWED_LABELS, labels - ALLOWED_LABELS
    assert not any("user" in k or ("item" in k and k != "item") for k in labels)
    # the one label named "item" says what kind of item, never which one
    assert {v for (_, pairs) in samples for k, v in pairs if k == "item"} == {"trained", "new"}


def test_metric_names_follow_prometheus_conventions() -> None:
    for family in Metrics().registry.collect():
        assert family.name.startswith("streamrec_"), family.name
        assert family.documentation, family.name
        if family.type == "counter":
            assert not family.name.endswith("_total")  # the client appends it
        if family.type in ("gauge", "histogram"):
            assert not family.name.endswith("_total"), family.name


def test_stream_state_metrics() -> None:
    metrics = Metrics()
    parts = ("streamrec_stream_state_entries", "streamrec_stream_state_forgotten")
    assert not [k for k in _samples(metrics) if k[0].startswith(parts)]  # nothing bound
    sizes = {"trending_items": (5, 2), "covisit_users": (3, 0), "covisit_pairs": (40, 7)}
    metrics.bind_stream_state(lambda: sizes)
    s = _samples(metrics)
    assert s[("streamrec_stream_state_entries", (("part", "trending_items"),))] == 5
    assert s[("streamrec_stream_state_entries", (("part", "covisit_pairs"),))] == 40
    assert s[("streamrec_stream_state_forgotten_total", (("part", "trending_items"),))] == 2
    assert s[("streamrec_stream_state_forgotten_total", (("part", "covisit_pairs"),))] == 7
