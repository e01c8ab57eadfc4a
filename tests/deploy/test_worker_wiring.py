"""A running worker exports the scrape-time metrics: lag per partition, index health, quality.

These need the worker to bind its sources (``Metrics.bind_index``, ``index_refreshed``,
``sample_lag``, ``observe_recommendations``); see the module docstring of streamrec.metrics.
"""

from __future__ import annotations

import time

import pytest
from support import read_topic, running_worker, scrape, send_events

from streamrec.core.events import Event
from streamrec.io.clients import ensure_topics
from streamrec.ops.settings import Settings
from streamrec.ranking.modelfiles import read_model_dir

pytestmark = pytest.mark.broker


def test_lag_index_health_and_quality_are_exported(settings: Settings) -> None:
    ensure_topics(settings, partitions=2)
    items = read_model_dir(settings.model_dir).item_ids
    events = [
        Event(f"w-{i}", f"user-{i % 5}", items[i % 30], "click", 1_700_000_000_000 + i)
        for i in range(40)
    ]
    with running_worker(settings) as running:
        send_events(settings, events, linger_ms=0)
        assert len(read_topic(settings.bootstrap_servers, settings.recs_topic, 40)) == 40
        deadline = time.monotonic() + 15
        while True:
            metrics = scrape(running.url)
            lag = {
                dict(labels)["partition"]: v
                for (name, labels), v in metrics.items()
                if name == "streamrec_consumer_lag_records"
            }
            if (lag and set(lag.values()) == {0}) or time.monotonic() > deadline:
                break
            time.sleep(0.5)

    assert lag == {"0": 0, "1": 0}, "consumer lag per owned partition, caught up (sample_lag)"
    assert metrics[("streamrec_index_items", ())] == len(items)
    assert metrics[("streamrec_index_deleted_ratio", ())] == 0
    assert 0 <= metrics[("streamrec_index_refresh_age_seconds", ())] < 10
    assert metrics[("streamrec_recommended_items", ())] >= settings.top_k
    coverage = metrics[("streamrec_catalog_coverage_ratio", ())]
    assert 0 < coverage <= 1
    assert metrics[("streamrec_cold_start_ratio", ())] > 0  # every user starts cold
    assert ("streamrec_click_hit_ratio", ()) in metrics  # users click again after a rec
    # only trained items here: the cold-start metrics are bound and exported, at zero
    assert metrics[("streamrec_new_items", ())] == 0
    assert metrics[("streamrec_new_item_vectors_total", ())] == 0
    slots = {
        dict(labels)["source"] + "/" + dict(labels)["item"]: v
        for (name, labels), v in metrics.items()
        if name == "streamrec_recommended_slots_total"
    }
    assert sum(slots.values()) == 40 * settings.top_k
    assert not any(v for key, v in slots.items() if key.endswith("/new") or key.startswith("enc"))
