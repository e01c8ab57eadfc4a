"""Scenarios 6 and 7: scaling 1 -> 2 -> 1 workers; a zombie whose late commit is fenced."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import (
    DBS,
    DbProbe,
    Stream,
    World,
    check_exactly_once,
    make_events,
    records_of,
    report,
    wait_until,
)

from streamrec.ranking.modelfiles import read_model_dir

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("db", DBS)
def test_scale_one_two_one(make_world: Callable[..., World], db: str) -> None:
    world = make_world(db)
    items = read_model_dir(world.model_dir).item_ids
    events = make_events(3000, items, world.tag)
    distinct = len({e.event_id for e in events})
    probe = DbProbe(world)
    recovery: list[float] = []
    a = world.start_worker("a")
    with Stream(world.producer_bootstrap, world.topic("events"), records_of(events), rate=400):
        probe.wait_applied(distinct // 4, 120, [a])
        before = probe.generations()
        assert len(before) == world.partitions, "a does not hold every partition"
        start = time.monotonic()
        b = world.start_worker("b", ready=False)
        # settled: every partition claimed again after the rebalance, and b holds some (ready)
        wait_until(probe.settled(before, [b]), 60, "the group did not settle with b in it")
        recovery.append(time.monotonic() - start)
        probe.wait_applied(distinct // 2, 120, [a, b])
        rc, seconds = a.terminate()
        assert rc == 0 and seconds < 10, a.log_tail()
        before, start = probe.applied(), time.monotonic()
        probe.wait_applied(min(distinct, before + 1), 120, [b])
        recovery.append(time.monotonic() - start)
    probe.wait_done(distinct, 180, [b])
    outcome = check_exactly_once(world, events)
    probe.close()
    report("6 scale 1->2->1", db, outcome, "join + leave (2 rebalances)", recovery)


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("T")


@pytest.mark.parametrize("db", DBS)
def test_zombie_late_commit_is_fenced(make_world: Callable[..., World], db: str) -> None:
    """Worker A freezes itself (SIGSTOP) with a processed batch in hand, just before its commit;
    B takes the partitions over; SIGCONT A: its commit is rejected by the generation fence."""
    world = make_world(db)
    items = read_model_dir(world.model_dir).item_ids
    events = make_events(3000, items, world.tag)
    distinct = len({e.event_id for e in events})
    probe = DbProbe(world)
    a = world.start_worker("zombie", FAULT_FREEZE_BEFORE_COMMIT="4")
    with Stream(world.producer_bootstrap, world.topic("events"), records_of(events), rate=400):
        wait_until(lambda: _stopped(a.proc.pid), 60, "zombie never froze")
        frozen = probe.generations()
        start = time.monotonic()
        b = world.start_worker("b")
        wait_until(
            lambda: all(probe.generations().get(p, 0) > g for p, g in frozen.items()),
            60,
            "partitions did not move to b",
        )
        before = probe.applied()
        probe.wait_applied(before + 1, 60, [b])
        recovery = [time.monotonic() - start]
        a.proc.send_signal(signal.SIGCONT)
        wait_until(
            lambda: (
                a.readyz()
                and a.metrics().get(("streamrec_errors_total", (("component", "fenced"),)), 0) >= 1
            ),
            30,
            "the zombie's late commit was not fenced",
        )
    probe.wait_done(distinct, 180, [a, b])
    outcome = check_exactly_once(world, events)
    probe.close()
    report(
        "7 zombie (SIGSTOP/SIGCONT)",
        db,
        outcome,
        "SIGSTOP before commit, partitions moved",
        recovery,
    )
