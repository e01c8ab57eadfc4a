"""Scenario 6b: the group scales 1 -> 2 -> 4 -> 2 -> 1 under a steady stream, on PostgreSQL,
with global signals on: every event answered, the database equal to the exactly-once fold, one
rec_id per event, and the time for the group to settle at each step reported."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import (
    DbProbe,
    Stream,
    World,
    check_exactly_once,
    make_events,
    records_of,
    report,
    wait_until,
)

from streamrec.io.clients import create_topics
from streamrec.ranking.modelfiles import read_model_dir

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.faults_long]

SETTLE_ENV = "STREAMREC_SCALE_REPORT"  # where the per-step settle times go (JSON), when set


def test_scale_one_two_four_two_one(make_world: Callable[..., World]) -> None:
    world = make_world("postgresql", STREAMREC_SIGNALS_INTERVAL_MS="500")
    signals_topic = world.topic("signals")
    world.worker_env["STREAMREC_SIGNALS_TOPIC"] = signals_topic
    create_topics(world.settings(), [signals_topic], world.partitions)
    items = read_model_dir(world.model_dir).item_ids
    events = make_events(9000, items, world.tag)
    distinct = len({e.event_id for e in events})
    probe = DbProbe(world)
    steps: list[tuple[str, float]] = []
    running = [world.start_worker("w0")]
    previous = 1
    with Stream(world.producer_bootstrap, world.topic("events"), records_of(events), rate=300):
        probe.wait_applied(distinct // 10, 120, running)
        for target in (2, 4, 2, 1):
            before = probe.generations()
            applied = probe.applied()
            start = time.monotonic()
            while len(running) < target:
                running.append(world.start_worker(f"w{len(world.workers)}", ready=False))
            while len(running) > target:
                leaving = running.pop()
                rc, seconds = leaving.terminate()
                assert rc == 0 and seconds < 10, leaving.log_tail()
            wait_until(probe.settled(before, running), 90, f"the group did not settle at {target}")
            steps.append((f"{previous}->{target}", time.monotonic() - start))
            previous = target
            probe.wait_applied(min(distinct, applied + 1), 60, running)  # and it moves on
    probe.wait_done(distinct, 240, running)
    outcome = check_exactly_once(world, events)
    metrics = running[0].metrics()  # w0 ran throughout and read the whole signals topic
    deltas = {
        labels[0][1]: value
        for (name, labels), value in metrics.items()
        if name == "streamrec_signal_deltas_total"
    }
    probe.close()
    assert deltas.get("applied", 0) >= 1, "the last worker never merged another worker's delta"
    if os.environ.get(SETTLE_ENV):
        signal_bytes = metrics[("streamrec_signal_bytes_total", (("direction", "in"),))]
        facts = {"settle_s": dict(steps), "deltas": deltas, "signal_bytes_read": signal_bytes}
        facts["signal_bytes_per_event"] = signal_bytes / len(events)
        Path(os.environ[SETTLE_ENV]).write_text(json.dumps(facts))
    report(
        "6b scale 1->2->4->2->1",
        "postgresql",
        outcome,
        "3 joins + 3 leaves, global signals on",
        [s for _, s in steps],
    )
