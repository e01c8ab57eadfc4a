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
from tcpproxy import TcpProxy

from streamrec.io.broker import broker_command, free_port, wait_for_port
from streamrec.io.clients import create_topics
from streamrec.ops.settings import load_settings
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
        # the worker has noticed (and a batch in flight has landed) once /readyz fails
        wait_until(lambda: worker.readyz() == 503, down_s, f"/readyz stayed 200, {what} down")
        during = probe.applied()
        while time.monotonic() - cut_at < down_s:
            assert worker.proc.poll() is None, worker.log_tail()
            time.sleep(0.2)
        assert worker.readyz() == 503, f"/readyz became ready while the {what} was down"
        assert probe.applied() == during, f"events applied while the {what} was down"
        age = worker.metrics()[("streamrec_index_refresh_age_seconds", ())]
        heal()
        start = time.monotonic()
        probe.wait_applied(during + 1, 120, [worker])
        recovery = [time.monotonic() - start]
    probe.wait_done(distinct, 180, [worker])
    outcome = check_exactly_once(world, events)
    worker.wait_ready(30)
    metrics = worker.metrics()
    probe.close()
    metrics[("cut_refresh_age", ())] = age  # type: ignore[index]
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
    # the catalog is on the cut broker too: the index's refresh age must grow, not stay at 0
    assert metrics[("cut_refresh_age", ())] >= 5.0, "index refresh age did not age in the cut"
    report("3 broker link cut", "sqlite", outcome, "proxy cuts broker 8 s", recovery)  # type: ignore[arg-type]


@pytest.mark.postgres
def test_database_outage_mid_stream(make_world: Callable[..., World]) -> None:
    with TcpProxy("127.0.0.1", 5432) as proxy:
        world = make_world("postgresql", pg_port=proxy.port)
        recovery, (outcome, metrics) = _outage(world, proxy.down, proxy.up, 10.0, "database")
    assert metrics[("streamrec_errors_total", (("component", "store"),))] >= 1
    report("4 database outage", "postgresql", outcome, "proxy cuts PostgreSQL 10 s", recovery)  # type: ignore[arg-type]


OUTPUT_CLIENTS = ["kafka-python", "confluent-kafka"]  # STREAMREC_OUTPUT_CLIENT


def _suffix(client: str) -> str:
    """The scenario's name in RELIABILITY.md: the default client unnamed."""
    return "" if client == "kafka-python" else f" ({client} output)"


def _output_world(make_world: Callable[..., World], proxy: TcpProxy, **env: str) -> World:
    """Input on the shared broker; output (recommendations, dead letters) on the proxied one."""
    output = f"127.0.0.1:{proxy.port}"
    world = make_world("sqlite", STREAMREC_OUTPUT_BOOTSTRAP_SERVERS=output, **env)
    world.output_bootstrap = output
    out = world.settings()
    create_topics(
        load_settings(bootstrap_servers=output, metrics_port=0),
        [out.recs_topic, out.dlq_topic],
        world.partitions,
    )
    return world


@pytest.mark.parametrize("client", OUTPUT_CLIENTS)
def test_output_outage_keeps_the_group_and_loses_nothing(
    make_world: Callable[..., World], proxied_broker: TcpProxy, client: str
) -> None:
    """Scenario 10: the output broker goes away while input keeps flowing (backpressure)."""
    world = _output_world(
        make_world,
        proxied_broker,
        STREAMREC_OUTBOX_MAX_PENDING="300",
        STREAMREC_OUTPUT_CLIENT=client,
    )
    items = read_model_dir(world.model_dir).item_ids
    events = make_events(3000, items, world.tag)
    distinct = len({e.event_id for e in events})
    probe = DbProbe(world)
    worker = world.start_worker("w0")
    claimed = probe.generations()
    with Stream(world.producer_bootstrap, world.topic("events"), records_of(events), rate=300):
        probe.wait_applied(distinct // 4, 120, [worker])
        proxied_broker.down()
        cut_at = time.monotonic()
        wait_until(lambda: worker.readyz() == 503, 30, "/readyz stayed 200 without an output")
        while time.monotonic() - cut_at < 12.0:  # longer than the producer's delivery timeout
            assert worker.proc.poll() is None, worker.log_tail()
            time.sleep(0.2)
        metrics = worker.metrics()
        assert metrics[("streamrec_outbox_pending_messages", ())] >= 300, (
            "the backlog is not reported"
        )
        assert worker.readyz() == 503
        stalled = probe.applied()
        time.sleep(2.0)  # input keeps arriving, but the bounded backlog holds consumption
        assert probe.applied() == stalled, "consumption went on past the backlog bound"
        assert probe.outbox() >= 300, "rows waiting for the output are not in the outbox"
        proxied_broker.up()
        start = time.monotonic()
        probe.wait_applied(stalled + 1, 120, [worker])
        recovery = [time.monotonic() - start]
    probe.wait_done(distinct, 180, [worker])
    outcome = check_exactly_once(world, events)
    assert probe.generations() == claimed, "the worker left its group (partitions re-claimed)"
    code, seconds = worker.terminate()
    assert code == 0 and seconds < 10, (code, seconds, worker.log_tail())
    probe.close()
    report(
        f"10 output outage{_suffix(client)}",
        "sqlite",
        outcome,
        "proxy cuts the output broker 12 s",
        recovery,
    )


@pytest.mark.parametrize("client", OUTPUT_CLIENTS)
def test_sigterm_with_the_output_down_exits_in_time_and_loses_nothing(
    make_world: Callable[..., World], proxied_broker: TcpProxy, client: str
) -> None:
    """Scenario 11: SIGTERM while the output broker is away; the restart publishes the rest."""
    world = _output_world(make_world, proxied_broker, STREAMREC_OUTPUT_CLIENT=client)
    items = read_model_dir(world.model_dir).item_ids
    events = make_events(1500, items, world.tag)
    distinct = len({e.event_id for e in events})
    probe = DbProbe(world)
    worker = world.start_worker("w0")
    with Stream(world.producer_bootstrap, world.topic("events"), records_of(events), rate=0):
        probe.wait_applied(distinct // 3, 120, [worker])
        proxied_broker.down()
        wait_until(lambda: worker.readyz() == 503, 30, "/readyz stayed 200 without an output")
        code, seconds = worker.terminate()
    assert code == 0 and seconds < 10, (code, seconds, worker.log_tail())
    assert probe.outbox() > 0, "nothing was left to publish: the test proves nothing"
    proxied_broker.up()
    restarted = world.start_worker("w1")  # every event may be applied already: wait for ready
    probe.wait_done(distinct, 180, [restarted])
    wait_until(lambda: probe.outbox() == 0, 60, "the outbox was not relayed after the restart")
    outcome = check_exactly_once(world, events)
    probe.close()
    report(
        f"11 SIGTERM, output down{_suffix(client)}",
        "sqlite",
        outcome,
        "SIGTERM during an output cut",
        [seconds],
    )
