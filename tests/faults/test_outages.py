"""Scenarios 3 and 4: the broker link cut (TCP proxy) and a PostgreSQL outage mid-stream.

The embedded broker keeps its data in memory only, so "broker restart" is simulated by a TCP
proxy in front of it that cuts every connection and refuses new ones, then forwards again.
"""

from __future__ import annotations

import gc
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import DbProbe, Stream, World, check_exactly_once, make_events, records_of, report
from tcpproxy import TcpProxy

from streamrec.io.broker import broker_command, free_port, wait_for_port
from streamrec.ranking.modelfiles import read_model_dir

pytestmark = pytest.mark.broker


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[TcpProxy]:
    """A dedicated broker that advertises the proxy's address, so every client goes through it."""
    proxy_port, broker_port = free_port(), free_port()
    cmd = broker_command(broker_port)
    cmd[cmd.index("--advertised-listener-url") + 1] = f"tcp://127.0.0.1:{proxy_port}"
    with open(tmp_path / "proxied-broker.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_for_port("127.0.0.1", broker_port, 15), "broker did not start"
        with TcpProxy("127.0.0.1", broker_port, port=proxy_port) as proxy:
            yield proxy
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        # kafka-python 3.0 drops (without closing) the sockets of refused connection attempts
        # made by the test's own clients during the cut: collect them here, quietly
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


def _outage(
    world: World,
    cut: Callable[[], None],
    heal: Callable[[], None],
    down_s: float,
    what: str,
    rate: float = 400,
) -> tuple[list[float], object]:
    items = read_model_dir(world.model_dir).item_ids
    events = make_events(3000, items, world.tag)
    distinct = len({e.event_id for e in events})
    probe = DbProbe(world)
    worker = world.start_worker("w0")
    with Stream(world.producer_bootstrap, world.topic("events"), records_of(events), rate=rate):
        probe.wait_applied(distinct // 3, 120, [worker])
        cut()
        cut_at = time.monotonic()
        time.sleep(1.0)  # a batch in flight may still land
        during = probe.applied()
        while time.monotonic() - cut_at < down_s:
            assert worker.proc.poll() is None, worker.log_tail()
            time.sleep(0.2)
        assert worker.readyz() == 503, f"/readyz stayed ready while the {what} was down"
        assert probe.applied() == during, f"events applied while the {what} was down"
        heal()
        start = time.monotonic()
        probe.wait_applied(during + 1, 120, [worker])
        recovery = [time.monotonic() - start]
    probe.wait_done(distinct, 180, [worker])
    outcome = check_exactly_once(world, events)
    worker.wait_ready(30)
    metrics = worker.metrics()
    probe.close()
    return recovery, (outcome, metrics)


def test_broker_link_cut_mid_stream(
    make_world: Callable[..., World], proxied_broker: TcpProxy
) -> None:
    # the test's own producer must not live through the cut (kafka-python leaks the sockets of
    # refused connections): produce everything first; small batches keep the worker busy
    world = make_world(
        "sqlite",
        bootstrap=f"127.0.0.1:{proxied_broker.port}",
        STREAMREC_BATCH_MAX_EVENTS="10",
    )
    recovery, (outcome, metrics) = _outage(
        world, proxied_broker.down, proxied_broker.up, 8.0, "broker", rate=0
    )
    assert metrics[("streamrec_errors_total", (("component", "broker"),))] >= 1
    report("3 broker link cut", "sqlite", outcome, "proxy cuts broker 8 s", recovery)  # type: ignore[arg-type]


@pytest.mark.postgres
def test_database_outage_mid_stream(make_world: Callable[..., World]) -> None:
    with TcpProxy("127.0.0.1", 5432) as proxy:
        world = make_world("postgresql", pg_port=proxy.port)
        recovery, (outcome, metrics) = _outage(world, proxy.down, proxy.up, 10.0, "database")
    assert metrics[("streamrec_errors_total", (("component", "store"),))] >= 1
    report("4 database outage", "postgresql", outcome, "proxy cuts PostgreSQL 10 s", recovery)  # type: ignore[arg-type]
