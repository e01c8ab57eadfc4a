"""Fixtures of the contract suite: one ``Store`` per backend (SQLite file, PostgreSQL).

PostgreSQL runs at 127.0.0.1:5432 (trust auth, user ``postgres``). Each test module gets a
fresh, uniquely named database, dropped at the end; each test starts from an empty schema.
When the server is unreachable the PostgreSQL parameters are skipped, saying why (with
``CI=true`` they fail instead: see tests/needs.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from needs import unavailable
from sqlalchemy import text

from streamrec.state.schema import metadata
from streamrec.state.store import Store

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN = f"host={PG_HOST} port={PG_PORT} user=postgres dbname=test connect_timeout=3"

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def _admin_connect():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(PG_ADMIN, autocommit=True)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this module (skips when unreachable)."""
    try:
        admin = _admin_connect()
    except Exception as exc:  # any failure to connect means: no server for this run
        unavailable(f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT}: {type(exc).__name__}")
    name = f"streamrec_contract_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with _admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL with an empty schema (no tables at all)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    url: str = request.getfixturevalue("pg_url")
    _drop_schema(url)
    yield url
    _drop_schema(url)


def _drop_schema(url: str) -> None:
    store = Store(url)
    try:
        with store.engine.begin() as conn:
            metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        store.close()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated store of group ``g1``."""
    with Store(db_url, group_id="g1") as s:
        s.migrate()
        yield s
