"""Scenario 5: SIGTERM mid-stream: finish the batch, commit, publish, exit 0 within 10 s."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from harness import DbProbe, Stream, World, check_exactly_once, make_events, records_of, report

from streamrec.ranking.modelfiles import read_model_dir

pytestmark = pytest.mark.broker


def test_sigterm_mid_batch_exits_0_within_10s(make_world: Callable[..., World]) -> None:
    world = make_world("sqlite")
    items = read_model_dir(world.model_dir).item_ids
    events = make_events(3000, items, world.tag)
    distinct = len({e.event_id for e in events})
    probe = DbProbe(world)
    recovery: list[float] = []
    worker = world.start_worker("w0")
    with Stream(world.producer_bootstrap, world.topic("events"), records_of(events), rate=500):
        for k in range(2):
            probe.wait_applied(distinct * (k + 1) // 3, 120, [worker])
            rc, seconds = worker.terminate()
            assert rc == 0, worker.log_tail()
            assert seconds < 10, f"exit took {seconds:.1f} s"
            assert "worker stopped" in worker.log_tail(5)
            # drained: everything committed was published before the exit
            assert probe.outbox() == 0, "SIGTERM left unpublished messages"
            worker, seconds = probe.restart(f"w{k + 1}")
            recovery.append(seconds)
    probe.wait_done(distinct, 120, [worker])
    outcome = check_exactly_once(world, events)
    rc, seconds = worker.terminate()
    assert rc == 0 and seconds < 10
    probe.close()
    report("5 SIGTERM mid-stream", "sqlite", outcome, "2 x SIGTERM + restart", recovery)
