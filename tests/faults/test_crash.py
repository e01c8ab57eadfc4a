"""Scenarios 1 and 2: kill -9 while events stream in; kill -9 between commit and publish."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from harness import DBS, DbProbe, Stream, World, check_exactly_once, make_events, records_of, report

from streamrec.ranking.modelfiles import read_model_dir

pytestmark = pytest.mark.broker


def _kill_loop(make_world: Callable[..., World], db: str, n: int, kills: int, rate: float) -> None:
    world = make_world(db)
    items = read_model_dir(world.model_dir).item_ids
    events = make_events(n, items, world.tag)
    distinct = len({e.event_id for e in events})
    probe = DbProbe(world)
    recovery: list[float] = []
    worker = world.start_worker("w0")
    with Stream(world.producer_bootstrap, world.topic("events"), records_of(events), rate):
        for k in range(kills):
            # kill at evenly spaced points of progress, mid-stream
            probe.wait_applied(distinct * (k + 1) // (kills + 2), 120, [worker])
            worker.kill9()
            worker, seconds = probe.restart(f"w{k + 1}")
            recovery.append(seconds)
    probe.wait_done(distinct, 180, [worker])
    outcome = check_exactly_once(world, events)
    probe.close()
    report(f"1 kill -9 x{kills}", db, outcome, f"{kills} x SIGKILL + restart", recovery)


@pytest.mark.parametrize("db", DBS)
def test_kill9_while_streaming(make_world: Callable[..., World], db: str) -> None:
    _kill_loop(make_world, db, n=2500, kills=2, rate=400)


@pytest.mark.faults_long
@pytest.mark.timeout(900)
@pytest.mark.parametrize("db", DBS)
def test_kill9_while_streaming_long(make_world: Callable[..., World], db: str) -> None:
    _kill_loop(make_world, db, n=20000, kills=5, rate=1000)


@pytest.mark.parametrize("db", DBS)
def test_kill9_between_commit_and_publish(make_world: Callable[..., World], db: str) -> None:
    """The worker SIGKILLs itself right after its 3rd database commit: the outbox holds that
    batch; the restarted worker relays it, so no event goes without its recommendation."""
    world = make_world(db)
    items = read_model_dir(world.model_dir).item_ids
    events = make_events(1500, items, world.tag)
    distinct = len({e.event_id for e in events})
    probe = DbProbe(world)
    with Stream(world.producer_bootstrap, world.topic("events"), records_of(events), rate=0):
        pass
    crashing = world.start_worker("crash", ready=False, FAULT_CRASH_AFTER_COMMIT="3")
    assert crashing.proc.wait(timeout=120) == -9, crashing.log_tail()
    stranded = probe.outbox()
    assert stranded > 0, "the crash left nothing committed-but-unpublished"
    start = time.monotonic()
    worker = world.start_worker("after")
    probe.wait_done(distinct, 120, [worker])
    recovery = [time.monotonic() - start]
    outcome = check_exactly_once(world, events)
    probe.close()
    report(
        "2 kill -9 after commit",
        db,
        outcome,
        f"SIGKILL after commit ({stranded} in outbox)",
        recovery,
    )
