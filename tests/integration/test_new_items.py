"""Cold start through the real broker: a new item is recommendable as soon as evidence exists,
and an item id seen only in events never is.

The catalog announces an item N the model never saw (no vector: it sits at the centroid). User
A clicks three trained items, then N and an item JUNK that the catalog never announced
(``unknown_item_policy`` accepts both events). That click is the evidence: N co-occurs with
trained items, so in the same batch it gets a vector and is searchable. User B then clicks the
same trained items; the lists published for B's events contain N, and the worker's metrics
count it. JUNK has the same evidence and is trending as much, yet it never enters the index
nor any list. The time from producing the evidence to reading the first list with N is printed,
never asserted (speed goals live in ``benchmarks/new_items.py``).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support import producer, read_topic, running_worker, scrape

from streamrec.core.events import CatalogOp, Event
from streamrec.io.clients import ensure_topics
from streamrec.io.codec import encode_catalog, encode_event
from streamrec.ops.settings import Settings
from streamrec.ranking.modelfiles import read_model_dir

pytestmark = pytest.mark.broker

NEW = "cold-start-item-N"
JUNK = "never-in-the-catalog"
T0_MS = 1_700_000_000_000


def _items(record: Any) -> list[str]:
    return [it["item_id"] for it in json.loads(record.value)["items"]]


def test_a_new_item_is_recommended_for_the_next_event_and_counted(settings: Settings) -> None:
    # deterministic lists: no exploration; one partition keeps A's evidence before B's events
    settings = settings.model_copy(update={"explore_rate": 0.0, "explore_seed": 7})
    ensure_topics(settings, partitions=1)
    trained = read_model_dir(settings.model_dir).item_ids
    assert NEW not in trained
    shared = trained[:3]
    # B's last list: its history (the three trained items) is excluded, so co-visitation and
    # trending each hold N alone at rank 1, which no encoder-only candidate can outscore
    a_events = [Event(f"a-{n}", "user-A", i, "click", T0_MS + n) for n, i in enumerate(shared)]
    a_events.append(Event("a-junk", "user-A", JUNK, "click", T0_MS + 9))
    evidence = Event("a-new", "user-A", NEW, "click", T0_MS + 10)
    b_events = [Event(f"b-{n}", "user-B", i, "click", T0_MS + 20 + n) for n, i in enumerate(shared)]
    expected = len(a_events) + 1 + len(b_events)
    first_seen: list[float] = []

    def read_all(records: list[Any]) -> bool:
        if not first_seen and any(NEW in _items(r) for r in records):
            first_seen.append(time.monotonic())
        return len(records) >= expected

    announce = producer(settings, linger_ms=0)  # read by the worker's catch-up at start
    op = CatalogOp(NEW, "upsert", True, T0_MS)
    announce.send(settings.items_topic, key=NEW.encode(), value=encode_catalog(op)).get(30)
    announce.close()

    with running_worker(settings) as running, ThreadPoolExecutor(1) as pool:
        reading = pool.submit(
            read_topic, settings.bootstrap_servers, settings.recs_topic, read_all, 60
        )
        prod = producer(settings, linger_ms=0)
        for e in a_events:
            prod.send(settings.events_topic, key=e.user_id.encode(), value=encode_event(e))
        prod.flush(30)
        produced_at = time.monotonic()
        sent = prod.send(
            settings.events_topic, key=evidence.user_id.encode(), value=encode_event(evidence)
        )
        for e in b_events:
            prod.send(settings.events_topic, key=e.user_id.encode(), value=encode_event(e))
        prod.flush(30)
        evidence_ts_ms = sent.get(30).timestamp
        prod.close()
        records = reading.result(timeout=90)
        assert running.worker.model.index.is_live(NEW), "N got a vector and is searchable"
        assert JUNK not in running.worker.model.index, "an id seen only in events: never indexed"
        metrics = scrape(running.url)

    by_event = {json.loads(r.value)["event_id"]: r for r in records}
    assert set(by_event) == {e.event_id for e in [*a_events, evidence, *b_events]}
    assert NEW not in _items(by_event[evidence.event_id]), "never recommend the item just seen"
    assert NEW in _items(by_event[b_events[-1].event_id]), "N is recommendable for B"
    assert not [r for r in records if JUNK in _items(r)], "never in anybody's list"
    with_new = [r for r in records if NEW in _items(r)]
    assert first_seen and with_new
    print(
        f"\nnew item {NEW}: evidence produced -> first list containing it read by a consumer: "
        f"{(first_seen[0] - produced_at) * 1000:.0f} ms (includes the reader's fetch wait); "
        f"evidence record ts -> that list's record ts: "
        f"{with_new[0].timestamp - evidence_ts_ms} ms"
    )

    assert metrics[("streamrec_new_item_vectors_total", ())] >= 1
    assert metrics[("streamrec_new_items", ())] >= 1
    new_slots = sum(
        v
        for (name, labels), v in metrics.items()
        if name == "streamrec_recommended_slots_total" and ("item", "new") in labels
    )
    assert new_slots >= len(with_new)
    assert new_slots >= 1
