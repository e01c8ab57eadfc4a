"""Scenario 12: the broker itself is SIGKILLed under load and restarted with its data.

The embedded broker runs durably (``EmbeddedBroker(durable=True)``: its data in an S3 bucket of
a local moto server, which outlives the broker), so a real crash can be injected: SIGKILL, not
a cut network path. The worker is never told; it must recover by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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

from streamrec.io.broker import EmbeddedBroker
from streamrec.ranking.modelfiles import read_model_dir

pytestmark = pytest.mark.broker


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path / "durable-broker.log", durable=True) as broker:
        yield broker


def _crash_round(make_world: Callable[..., World], broker: EmbeddedBroker, round_: str) -> None:
    world = make_world("sqlite", bootstrap=broker.bootstrap, STREAMREC_BATCH_MAX_EVENTS="20")
    items = read_model_dir(world.model_dir).item_ids
    events = make_events(2000, items, world.tag)
    distinct = len({e.event_id for e in events})
    # everything is produced (and acked) first: the test's own producer must not live through
    # the crash (kafka-python leaks the sockets of refused connections)
    with Stream(world.producer_bootstrap, world.topic("events"), records_of(events), rate=0):
        pass
    probe = DbProbe(world)
    worker = world.start_worker("w0")
    probe.wait_applied(distinct // 3, 120, [worker])
    broker.kill()
    time.sleep(2.0)
    assert worker.proc.poll() is None, worker.log_tail()
    before = probe.applied()
    broker.start()
    start = time.monotonic()
    probe.wait_applied(before + 1, 120, [worker])
    recovery = [time.monotonic() - start]
    probe.wait_done(distinct, 180, [worker])
    wait_until(lambda: probe.outbox() == 0, 60, "the outbox was not emptied")
    outcome = check_exactly_once(world, events)
    code, seconds = worker.terminate()
    assert code == 0 and seconds < 10, (code, seconds, worker.log_tail())
    probe.close()
    name = f"12 broker SIGKILL ({round_})"
    report(name, "sqlite", outcome, "SIGKILL of the durable broker, restart after 2 s", recovery)


def test_broker_sigkill_under_load_loses_nothing(
    make_world: Callable[..., World], durable_broker: EmbeddedBroker
) -> None:
    _crash_round(make_world, durable_broker, "once")


@pytest.mark.faults_long
@pytest.mark.timeout(900)
def test_broker_sigkill_three_times_in_a_row(
    make_world: Callable[..., World], durable_broker: EmbeddedBroker
) -> None:
    for round_ in range(3):
        _crash_round(make_world, durable_broker, f"long, round {round_ + 1} of 3")
