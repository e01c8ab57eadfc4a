"""Hot model reload through the real broker, under steady traffic.

Version 1 (the trained test model) serves from a model repository; version 2 (the same
encoder with its item vectors permuted: another model) is dropped into the repository while
events keep arriving. The outputs switch to version 2 within one poll interval (plus its
measured load time), never mix back, and every event is answered exactly once with the state
equal to the fold of the events. A corrupt version 3 is then refused (metric and log) and
version 2 keeps serving. Items the catalog deleted stay unrecommended across the swap.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import producer, read_topic, running_worker, scrape, unique_settings

from streamrec.core.events import CatalogOp, Event, rec_id_for
from streamrec.core.history import fold_events
from streamrec.io.broker import EmbeddedBroker
from streamrec.io.clients import ensure_topics
from streamrec.io.codec import encode_catalog, encode_event
from streamrec.ranking.modelfiles import ENCODER_FILE, read_model_dir, write_model_dir
from streamrec.ranking.repository import claim_next_version, publish
from streamrec.state.store import Store

pytestmark = pytest.mark.broker

POLL_S = 1.0
RATE_PER_S = 40.0
SLACK_S = 1.5  # scheduling on a small shared machine: a loop iteration, a batch, a commit


class _Traffic:
    """Produces click/purchase events at a steady rate on a thread until stopped."""

    def __init__(self, settings: Any, items: list[str]) -> None:
        self.settings = settings
        self.items = items
        self.sent: list[Event] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(5)
        prod = producer(self.settings, linger_ms=5)
        n = 0
        while not self.stop.is_set():
            event = Event(
                f"evt-{n}",
                f"user-{rng.randrange(30)}",
                rng.choice(self.items),
                "purchase" if rng.random() < 0.2 else "click",
                1_700_000_000_000 + n,
            )
            prod.send(
                self.settings.events_topic, key=event.user_id.encode(), value=encode_event(event)
            )
            self.sent.append(event)
            n += 1
            time.sleep(1.0 / RATE_PER_S)
        prod.flush(30)
        prod.close()


def _write_version(repo: Path, onnx: bytes, ids: list[str], vectors: np.ndarray) -> int:
    number, path = claim_next_version(repo)
    write_model_dir(path, onnx, ids, vectors, max_len=20)
    return number


def _wait(condition: Any, timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"{what} not within {timeout_s} s"
        time.sleep(0.02)
    return time.monotonic() - start


def test_v2_swaps_in_under_traffic_and_a_corrupt_v3_is_refused(
    broker: EmbeddedBroker, model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "models"
    assert publish(model_dir, repo) == 1
    v1 = read_model_dir(model_dir)
    settings = unique_settings(
        broker.bootstrap, repo, tmp_path, model_poll_interval_s=POLL_S, history_max_len=50
    )
    ensure_topics(settings, partitions=2)
    deleted = v1.item_ids[:5]
    prod = producer(settings, linger_ms=0)
    for item in deleted:
        op = CatalogOp(item, "delete", False, 1)
        prod.send(settings.items_topic, key=item.encode(), value=encode_catalog(op)).get(30)
    prod.close()
    onnx = (model_dir / ENCODER_FILE).read_bytes()
    permuted = v1.item_vectors[np.random.default_rng(1).permutation(len(v1.item_ids))]
    traffic = _Traffic(settings, v1.item_ids[:60])

    caplog.set_level(logging.INFO, logger="streamrec")
    with running_worker(settings) as running:
        worker = running.worker
        assert worker.model.number == 1
        traffic.thread.start()
        time.sleep(2.0)
        dropped_at = time.time()
        assert _write_version(repo, onnx, v1.item_ids, permuted) == 2
        swap_s = _wait(lambda: worker.model.number == 2, 30, "the swap to version 2")
        v2 = worker.model.files.meta.version
        time.sleep(2.0)
        assert _write_version(repo, b"corrupt onnx", v1.item_ids, permuted) == 3
        time.sleep(3 * POLL_S)
        assert worker.model.number == 2, "version 2 keeps serving"
        time.sleep(1.0)
        traffic.stop.set()
        traffic.thread.join(30)
        events = traffic.sent
        records = read_topic(settings.bootstrap_servers, settings.recs_topic, len(events), 90)
        metrics = scrape(running.url)
    print(f"swap {swap_s:.2f} s after version 2 was dropped; {len(events)} events")

    bodies = [json.loads(r.value) for r in records]
    assert len(bodies) == len(events), "every event answered once (no loss, no duplicate)"
    assert {b["rec_id"] for b in bodies} == {rec_id_for(e.event_id) for e in events}
    assert v2 != v1.meta.version
    assert {b["model_version"] for b in bodies} == {v1.meta.version, v2}
    last_v1 = max(b["generated_at"] for b in bodies if b["model_version"] == v1.meta.version)
    first_v2 = min(b["generated_at"] for b in bodies if b["model_version"] == v2)
    assert last_v1 <= first_v2, "outputs switch once and never mix back"
    load_s = metrics[("streamrec_model_load_duration_seconds", ())]
    assert first_v2 / 1000 - dropped_at <= POLL_S + load_s + SLACK_S, "switch within one poll"
    for body in bodies:
        assert not {it["item_id"] for it in body["items"]} & set(deleted)

    store = Store(settings.db_url, settings.group_id, settings.db_timeout_ms)
    try:
        assert store.all_users() == fold_events(events, settings.history_max_len)
    finally:
        store.close()

    assert metrics[("streamrec_model_reloads_total", ())] == 1
    assert metrics[("streamrec_model_reload_failures_total", (("reason", "load"),))] == 1
    info = [labels for name, labels in metrics if name == "streamrec_model_info"]
    assert info and ("repository_version", "2") in info[0] and ("version", v2) in info[0]
    refusals = [r for r in caplog.records if "model version 3 refused" in r.getMessage()]
    assert refusals and refusals[0].levelno == logging.ERROR
