"""Fixtures of the fault suite: a ``World`` per scenario (topics, group, database, workers).

Long variants carry the ``faults_long`` marker and run only with ``STREAMREC_FAULTS_LONG=1``
(``make faults``); the fast variants are part of ``make test``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import World
from needs import require_module, unavailable

from streamrec.io.broker import EmbeddedBroker
from streamrec.io.clients import ensure_topics

PG = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
LONG_ENV = "STREAMREC_FAULTS_LONG"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults_long: long fault variants (make faults)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(LONG_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"long fault variant: set {LONG_ENV}=1 (make faults)")
    for item in items:
        if "faults_long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def pg_database() -> Iterator[Callable[[], str]]:
    """Creates fresh PostgreSQL databases (dropped WITH (FORCE) at the end); returns the URL."""
    psycopg = require_module("psycopg")
    names: list[str] = []

    def create() -> str:
        try:
            admin = psycopg.connect(PG, autocommit=True)
        except Exception as exc:  # no server for this run
            unavailable(f"PostgreSQL not reachable: {type(exc).__name__}")
        name = f"streamrec_faults_{uuid.uuid4().hex[:12]}"
        with admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return name

    yield create
    if names:
        with psycopg.connect(PG, autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def make_world(
    broker: EmbeddedBroker,
    model_dir: Path,
    tmp_path: Path,
    pg_database: Callable[[], str],
) -> Iterator[Callable[..., World]]:
    """``make_world(db, bootstrap=None, pg_port=None, partitions=4)``: a scenario's world."""
    worlds: list[World] = []

    def make(
        db: str,
        bootstrap: str | None = None,
        pg_port: int | None = None,
        partitions: int = 4,
        **worker_env: str,
    ) -> World:
        if db == "sqlite":
            url = f"sqlite:///{tmp_path / f'state-{len(worlds)}.db'}"  # one per world
            check = url
        else:
            name = pg_database()
            check = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
            url = check.replace(":5432/", f":{pg_port}/") if pg_port else check
        world = World(
            tag=uuid.uuid4().hex[:8],
            workdir=tmp_path,
            model_dir=model_dir,
            bootstrap=bootstrap or broker.bootstrap,
            db_url=url,
            check_db_url=check,
            producer_bootstrap=bootstrap or broker.bootstrap,
            partitions=partitions,
            worker_env={
                # small group timeouts: a killed member is noticed in seconds
                "STREAMREC_SESSION_TIMEOUT_MS": "3000",
                "STREAMREC_HEARTBEAT_INTERVAL_MS": "500",
                **worker_env,
            },
        )
        ensure_topics(world.settings(), partitions=partitions)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        for w in world.workers:
            w.cleanup()
        for store in world.stores:  # a probe a failed test did not close
            store.close()
