"""Global signals through the broker: two workers, one partition each, each sees the whole
traffic's trending and co-visitation, every event counted once, also by a restarted worker
(which rebuilds from the signals topic, then from the database beyond what the deltas covered)."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
from support import read_topic, running_worker, scrape, send_events, unique_settings

from streamrec.core.events import Event
from streamrec.io.broker import EmbeddedBroker
from streamrec.io.clients import ensure_topics
from streamrec.ranking.ranker import Ranker
from streamrec.worker.serving import load_serving_model

pytestmark = pytest.mark.broker


def _ranker(running: object) -> Ranker:
    ranker = running.worker.pipeline.ranker  # type: ignore[attr-defined]
    assert ranker is not None
    return ranker


def _wait(check: object, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def _complete(workers: list[object], want: Counter[str]) -> Callable[[], bool]:
    """Every worker's trending score of every item is its exact click count (no decay)."""
    return lambda: all(
        all(_ranker(w).trending.score(i) == pytest.approx(c) for i, c in want.items())
        for w in workers
    )


def _clicks(items: list[str], n: int, tag: str, seed: int) -> list[Event]:
    rng = random.Random(seed)
    ts = 1_700_000_000_000  # one event time: no decay, scores are plain counts
    return [
        Event(f"{tag}{k}", f"user-{rng.randrange(40)}", rng.choice(items), "click", ts)
        for k in range(n)
    ]


def test_two_workers_each_see_the_others_trending_and_a_restart_counts_once(
    broker: EmbeddedBroker, model_dir: Path, tmp_path: Path
) -> None:
    settings = unique_settings(
        broker.bootstrap,
        model_dir,
        tmp_path,
        signals_topic=f"signals-{uuid.uuid4().hex[:8]}",
        signals_interval_ms=100,
    )
    ensure_topics(settings, partitions=2)
    items = list(load_serving_model(settings).files.item_ids)[:15]
    first, second = _clicks(items, 300, "a", 3), _clicks(items, 200, "b", 4)
    with running_worker(settings) as b:
        with ExitStack() as stack:
            a = stack.enter_context(running_worker(settings))
            assert _wait(lambda: len(a.worker.generations) == len(b.worker.generations) == 1)
            send_events(settings, first)
            answered = read_topic(settings.bootstrap_servers, settings.recs_topic, len(first))
            assert len(answered) == len(first)
            want = Counter(e.item_id for e in first)
            assert _wait(_complete([a, b], want)), {
                i: (c, _ranker(a).trending.score(i), _ranker(b).trending.score(i))
                for i, c in want.items()
            }
            pairs_a = {(x, y): _ranker(a).covisit.count(x, y) for x in items for y in items}
            pairs_b = {(x, y): _ranker(b).covisit.count(x, y) for x in items for y in items}
            assert pairs_a == pytest.approx(pairs_b) and sum(pairs_a.values()) > 0
            metrics = [scrape(w.url) for w in (a, b)]
        for m in metrics:
            assert m[("streamrec_signal_deltas_total", (("outcome", "applied"),))] >= 1
            assert m[("streamrec_signal_deltas_total", (("outcome", "published"),))] >= 1
            assert m[("streamrec_signals_staleness_seconds", ())] >= 0
        # a restarted worker rebuilds from the signals topic and the database: once per event
        send_events(settings, second[:100])  # b alone now
        with running_worker(settings) as a2:
            send_events(settings, second[100:])
            total = len(first) + len(second)
            assert len(read_topic(settings.bootstrap_servers, settings.recs_topic, total)) == total
            assert _wait(lambda: len(a2.worker.generations) == len(b.worker.generations) == 1)
            want = Counter(e.item_id for e in [*first, *second])
            assert _wait(_complete([a2, b], want)), {
                i: (c, _ranker(a2).trending.score(i), _ranker(b).trending.score(i))
                for i, c in want.items()
            }
