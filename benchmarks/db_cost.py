"""What one event costs the database, and how many commits one PostgreSQL takes: the inputs of
SCALING.md. Prints JSON and writes benchmarks/db_cost.json.

    PYTHONPATH=. .venv/bin/python benchmarks/db_cost.py [--events 10000] [--users 1000]

On a fresh PostgreSQL database (127.0.0.1:5432, user postgres; dropped at the end):

1. **The worker's writes**: ``Pipeline.process`` (fused ranking; the mean-of-history encoder
   over a random index: the database sees the same writes as with the ONNX model) then
   ``Store.commit_batch`` and ``Store.delete_outbox`` (what the relay does once the broker
   acknowledged) for ``--events`` simulated events in batches of ``--batch``. Per event: rows
   inserted, updated and deleted and transactions (``pg_stat_database`` of the fresh database),
   bytes of WAL (``pg_current_wal_lsn``: server-wide, so other clients of the shared server
   add to it: an upper bound) and the database's growth on disk.
2. **The commit-rate anchor**: one connection committing single-row inserts as fast as it can
   for ``--commit-seconds`` (``synchronous_commit`` as the server has it), and the worker's
   own batch transactions per second measured in step 1 (database time only).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from harness import HERE, machine

from streamrec.io.codec import encode_event
from streamrec.io.simulate import SimConfig, Simulator
from streamrec.ops.settings import load_settings
from streamrec.ranking.ranker import Ranker, RankingConfig
from streamrec.state.store import Store
from streamrec.testing import FakeClock, MeanEncoder, random_index
from streamrec.worker.step import Pipeline, Record

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
STATS = (
    "select xact_commit, tup_inserted, tup_updated, tup_deleted, pg_database_size(datname) "
    "from pg_stat_database where datname = %s"
)


def _stats(conn: psycopg.Connection, name: str) -> dict[str, int]:
    conn.execute("select pg_stat_force_next_flush()")
    time.sleep(1.2)  # statistics reach the shared view asynchronously
    row = conn.execute(STATS, (name,)).fetchone()
    assert row is not None
    wal = conn.execute("select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()
    keys = ("commits", "inserted", "updated", "deleted", "db_bytes")
    out = dict(zip(keys, (int(v) for v in row), strict=True))
    out["wal_bytes"] = int(wal[0]) if wal else 0
    return out


def worker_writes(
    name: str, events: int, batch: int, users: int, items: int = 2000
) -> dict[str, Any]:
    """Step 1 of the module docstring."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    settings = load_settings(metrics_port=0, db_url=url)
    store = Store(url, settings.group_id, settings.db_timeout_ms)
    store.migrate()
    generation, _ = store.claim_partitions(settings.events_topic, [0])[0]
    encoder, index = MeanEncoder(32, max_len=50), random_index(items, 32, seed=0)
    ids = [f"i{n}" for n in range(items)]
    ranker = Ranker(encoder, index, RankingConfig.from_settings(settings), trained=ids)
    pipeline = Pipeline(settings, encoder, index, "v", FakeClock(), ranker=ranker)
    sim = Simulator(SimConfig(users=users, items=items, seed=2))
    stream = list(sim.events(events))
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        before = _stats(conn, name)
        db_s = 0.0
        transactions = 0
        for start in range(0, events, batch):
            chunk = stream[start : start + batch]
            records = [
                Record(settings.events_topic, 0, start + n, e.user_id.encode(), encode_event(e), 0)
                for n, e in enumerate(chunk)
            ]
            write, _ = pipeline.process(records, store, {0: generation})
            t1 = time.perf_counter()
            stored = store.commit_batch(write)
            store.delete_outbox(m.id for m in stored if m.id is not None)
            db_s += time.perf_counter() - t1
            transactions += 2
        after = _stats(conn, name)
    store.close()
    delta = {k: after[k] - before[k] for k in before}
    per_event = {k: round(v / events, 2) for k, v in delta.items()}
    return {
        "events": events,
        "batch": batch,
        "per_event": per_event,
        "db_seconds": round(db_s, 2),
        "users": users,
        "worker_transactions_per_s": round(transactions / db_s, 1),
        "events_per_db_second": round(events / db_s, 0),
    }


def _commit_loop(dsn: str, seconds: float) -> tuple[int, float]:
    with psycopg.connect(dsn) as conn:
        n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            conn.execute("insert into commit_probe (v) values ('x')")
            conn.commit()
            n += 1
        return n, time.perf_counter() - start


def commit_rate(name: str, seconds: float, connections: Sequence[int] = (1, 4)) -> dict[str, Any]:
    """Step 2: single-row insert transactions per second, on 1 and on 4 connections at once
    (PostgreSQL groups concurrent commits into one WAL flush)."""
    dsn = ADMIN.replace("dbname=test", f"dbname={name}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create table commit_probe (id bigserial primary key, v text)")
        sync = conn.execute("show synchronous_commit").fetchone()
    out: dict[str, Any] = {"synchronous_commit": sync[0] if sync else ""}
    for n_conn in connections:
        with ThreadPoolExecutor(n_conn) as pool:
            results = list(pool.map(lambda _: _commit_loop(dsn, seconds), range(n_conn)))
        out[f"commits_per_s_{n_conn}_connections"] = round(
            sum(n for n, _ in results) / max(t for _, t in results), 0
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--commit-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    name = f"streamrec_dbcost_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
        version = admin.execute("show server_version").fetchone()
    try:
        report = {
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "postgresql": version[0] if version else "",
            "writes": worker_writes(name, args.events, args.batch, args.users),
            "commit_rate": commit_rate(name, args.commit_seconds),
        }
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')
    (HERE / "db_cost.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
