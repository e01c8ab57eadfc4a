"""Fault-test harness: worker subprocesses, paced event streams and the exactly-once check.

Every scenario ends with ``check_exactly_once``: the database must equal the oracle over the
valid input events (``oracle.expected_users``, written independently of the production fold),
every valid event must have a recommendation on the output topic, and outputs may repeat only
with the same ``rec_id``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from oracle import differences, expected_users, lost_and_duplicated
from sqlalchemy import func, select
from support import read_topic

from streamrec.core.events import Event, rec_id_for
from streamrec.io.broker import free_port
from streamrec.io.codec import encode_event
from streamrec.ops.settings import Settings, load_settings
from streamrec.state.schema import applied_events, outbox, partition_offsets
from streamrec.state.store import Store

LAUNCHER = Path(__file__).with_name("launch_worker.py")
HISTORY_MAX_LEN = 200  # the worker's default history_max_len
REPORT_ENV = "STREAMREC_FAULT_REPORT"  # append one JSON line per scenario to this file
DBS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@dataclass
class World:
    """One scenario's topics, group, database and broker addresses."""

    tag: str
    workdir: Path
    model_dir: Path
    bootstrap: str  # what workers connect to (maybe a proxy)
    db_url: str  # what workers connect to (maybe a proxy)
    check_db_url: str  # what the test reads
    producer_bootstrap: str = ""
    output_bootstrap: str = ""  # where the output topics live, when not on the input broker
    partitions: int = 4
    worker_env: dict[str, str] = field(default_factory=dict)
    workers: list[WorkerProc] = field(default_factory=list)
    stores: list[Store] = field(default_factory=list)  # closed at teardown, even on failure

    @property
    def group_id(self) -> str:
        return f"g-{self.tag}"

    def topic(self, kind: str) -> str:
        return f"{kind}-{self.tag}"

    def settings(self) -> Settings:
        return load_settings(
            bootstrap_servers=self.producer_bootstrap or self.bootstrap,
            db_url=self.check_db_url,
            group_id=self.group_id,
            events_topic=self.topic("events"),
            items_topic=self.topic("items"),
            recs_topic=self.topic("recs"),
            dlq_topic=self.topic("dlq"),
            metrics_port=0,
        )

    def start_worker(
        self, name: str, ready: bool = True, group_id: str | None = None, **env: str
    ) -> WorkerProc:
        proc = WorkerProc(self, name, env, group_id or self.group_id)
        self.workers.append(proc)
        if ready:
            proc.wait_ready()
        return proc

    def store(self) -> Store:
        store = Store(self.check_db_url, self.group_id)
        self.stores.append(store)
        return store


class WorkerProc:
    """``streamrec run`` as a subprocess (through the fault launcher), logging to a file."""

    def __init__(self, world: World, name: str, env: dict[str, str], group_id: str) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = world.workdir / f"{name}.log"
        cmd = [
            sys.executable,
            str(LAUNCHER),
            "--bootstrap-servers",
            world.bootstrap,
            "--model",
            str(world.model_dir),
            "--db-url",
            world.db_url,
            "--group-id",
            group_id,
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.port),
        ]
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
        child_env.update(
            STREAMREC_EVENTS_TOPIC=world.topic("events"),
            STREAMREC_ITEMS_TOPIC=world.topic("items"),
            STREAMREC_RECS_TOPIC=world.topic("recs"),
            STREAMREC_DLQ_TOPIC=world.topic("dlq"),
            STREAMREC_POLL_TIMEOUT_MS="100",
            STREAMREC_LOG_LEVEL="INFO",
            **world.worker_env,
            **env,
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env, cwd=world.workdir
            )

    def log_tail(self, n: int = 30) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def readyz(self) -> int:
        """HTTP status of /readyz (0 when the server does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as err:
            return err.code
        except OSError:
            return 0

    def wait_ready(self, timeout_s: float = 90) -> float:
        """Wait until /readyz answers 200; returns the seconds waited."""
        start = time.monotonic()
        while self.readyz() != 200:
            assert self.proc.poll() is None, f"{self.name} exited:\n{self.log_tail()}"
            assert time.monotonic() - start < timeout_s, (
                f"{self.name} not ready:\n{self.log_tail()}"
            )
            time.sleep(0.1)
        return time.monotonic() - start

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout_s: float = 15) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds to exit)."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = -999
        return rc, time.monotonic() - start

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)


# -- input -------------------------------------------------------------------------------------
def make_events(n: int, items: Sequence[str], tag: str, users: int = 200) -> list[Event]:
    """n valid events (recent timestamps) with an exact re-send of an earlier event every 50."""
    rng = random.Random(tag)
    now = int(time.time() * 1000)
    out: list[Event] = []
    for i in range(n):
        if i and i % 50 == 0:
            out.append(out[rng.randrange(len(out))])  # a producer retry: same event again
            continue
        out.append(
            Event(
                event_id=f"{tag}-{i}",
                user_id=f"u{rng.randrange(users)}",
                item_id=rng.choice(items),
                type="purchase" if rng.random() < 0.2 else "click",
                ts=now - 60_000 + i,
            )
        )
    return out


def records_of(events: Sequence[Event]) -> list[tuple[bytes, bytes]]:
    return [(e.user_id.encode(), encode_event(e)) for e in events]


class Stream:
    """Produces records in a background thread at a steady rate (key = user id: ordered)."""

    def __init__(
        self, bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]], rate: float
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.records = list(records)
        self.rate = rate
        self.sent = 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Stream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join()

    def _run(self) -> None:
        try:
            prod = KafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                linger_ms=5,
                max_in_flight_requests_per_connection=1,  # keep each user's order on retries
                max_request_size=4 * 1024 * 1024,
            )
        except BaseException as exc:  # surfaced by join()
            self.errors.append(exc)
            return
        try:
            start = time.monotonic()
            for i, (key, value) in enumerate(self.records):
                prod.send(self.topic, key=key, value=value)
                self.sent = i + 1
                if self.rate > 0:
                    delay = start + (i + 1) / self.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            prod.flush(60)
        except BaseException as exc:  # surfaced by join()
            self.errors.append(exc)
        finally:
            try:
                prod.close(timeout=10)
            except Exception as exc:
                self.errors.append(exc)

    def join(self, timeout_s: float = 120) -> None:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "producer did not finish"
        if self.errors:
            raise self.errors[0]


# -- observation -------------------------------------------------------------------------------
class DbProbe:
    """Counts in the database, read by the test (never through a fault proxy)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.store = world.store()

    def close(self) -> None:
        self.store.close()

    def _scalar(self, query: Any) -> int:
        with self.store.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def applied(self) -> int:
        return self._scalar(select(func.count()).select_from(applied_events))

    def outbox(self) -> int:
        return self._scalar(select(func.count()).select_from(outbox))

    def generations(self) -> dict[int, int]:
        key = partition_offsets.c
        q = select(key.partition, key.generation).where(
            (key.group_id == self.world.group_id) & (key.topic == self.world.topic("events"))
        )
        with self.store.engine.connect() as conn:
            return {int(p): int(g) for p, g in conn.execute(q)}

    def next_offsets(self, group_id: str) -> dict[int, int]:
        key = partition_offsets.c
        q = select(key.partition, key.next_offset).where(
            (key.group_id == group_id) & (key.topic == self.world.topic("events"))
        )
        with self.store.engine.connect() as conn:
            return {int(p): int(o or 0) for p, o in conn.execute(q)}

    def restart(self, name: str, timeout_s: float = 120) -> tuple[WorkerProc, float]:
        """Start a worker and wait for its first applied event; returns it and the seconds
        from start to that event (the recovery time the report shows)."""
        before = self.applied()
        start = time.monotonic()
        worker = self.world.start_worker(name, ready=False)
        self.wait_applied(before + 1, timeout_s, [worker])
        return worker, time.monotonic() - start

    def wait_applied(self, at_least: int, timeout_s: float, workers: Sequence[WorkerProc] = ()):
        """Wait until at least this many events are applied; returns seconds waited."""
        start = time.monotonic()
        while self.applied() < at_least:
            for w in workers:
                assert w.proc.poll() is None, f"{w.name} exited:\n{w.log_tail()}"
            assert time.monotonic() - start < timeout_s, (
                f"only {self.applied()}/{at_least} applied after {timeout_s} s\n"
                + "\n".join(w.log_tail(15) for w in workers)
            )
            time.sleep(0.1)
        return time.monotonic() - start

    def settled(self, before: dict[int, int], workers: Sequence[WorkerProc]) -> Callable[[], bool]:
        """A condition: every partition claimed again since ``before`` (a rebalance finished)
        and every one of ``workers`` ready (holding partitions)."""
        return lambda: (
            all(g > before.get(p, 0) for p, g in self.generations().items())
            and all(w.readyz() == 200 for w in workers)
        )

    def wait_done(self, n_distinct: int, timeout_s: float, workers: Sequence[WorkerProc] = ()):
        """All distinct valid events applied and the outbox empty."""
        self.wait_applied(n_distinct, timeout_s, workers)
        wait_until(lambda: self.outbox() == 0, timeout_s, "outbox not drained")


def wait_until(pred: Callable[[], bool], timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not pred():
        assert time.monotonic() - start < timeout_s, f"timed out: {what}"
        time.sleep(0.1)
    return time.monotonic() - start


def distinct_event_ids(records: list[Any]) -> set[str]:
    return {json.loads(r.value)["event_id"] for r in records}


# -- the property ------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What a scenario measured; written to the report and asserted."""

    events: int
    distinct: int
    lost: int
    duplicated_effects: int
    outputs: int
    duplicate_outputs: int


def check_exactly_once(world: World, valid: Sequence[Event], ordered: bool = True) -> Outcome:
    """Database == the oracle over the valid events; one rec_id per event on the output topic.

    ``ordered``: every user's events were produced to one partition in input order.
    """
    expected = expected_users(valid)
    ids = {e.event_id for e in valid}
    recs = read_topic(
        world.output_bootstrap or world.producer_bootstrap or world.bootstrap,
        world.topic("recs"),
        lambda got: len(distinct_event_ids(got)) >= len(ids),
    )
    with world.store() as store:
        got = store.all_users()
    lost, dup = lost_and_duplicated(expected, got)
    bodies = [json.loads(r.value) for r in recs]
    for body in bodies:
        assert body["rec_id"] == rec_id_for(body["event_id"]), "rec_id is not stable"
    rec_ids = {b["rec_id"] for b in bodies}
    outcome = Outcome(
        events=len(valid),
        distinct=len(ids),
        lost=lost,
        duplicated_effects=dup,
        outputs=len(bodies),
        duplicate_outputs=len(bodies) - len(rec_ids),
    )
    assert lost == 0 and dup == 0, outcome
    diff = differences(expected, got, HISTORY_MAX_LEN, ordered)
    assert not diff, "database state differs from the oracle: " + "; ".join(diff[:10])
    assert {b["event_id"] for b in bodies} == ids, "an event has no recommendation"
    assert len(rec_ids) == len(ids)
    return outcome


def report(name: str, db: str, outcome: Outcome, faults: str, recovery_s: Sequence[float]) -> None:
    """Append one line to $STREAMREC_FAULT_REPORT (when set) for RELIABILITY.md."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    row = {
        "test": name,
        "db": db,
        "faults": faults,
        "recovery_s_max": round(max(recovery_s, default=0.0), 1),
        **outcome.__dict__,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


@contextmanager
def timed(out: list[float]) -> Iterator[None]:
    start = time.monotonic()
    yield
    out.append(time.monotonic() - start)
