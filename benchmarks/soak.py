"""Soak: one worker for N minutes under catalog churn at 1M items and steady events (issue 15).

``make soak`` runs it (30 minutes, 1,000,000 items); ``tests/soak`` runs a short variant. It:

* trains a small model (``--dim`` 64) unless ``--model``; starts the embedded broker; produces
  the catalog (``--items`` items with vectors, ``throughput_workload.make_catalog``) to the
  catalog topic;
* seeds an index snapshot covering that whole topic, built in this process in one bulk
  ``add_items`` (what a worker restarted after reading the catalog would load; building 1M items
  one upsert at a time in the worker takes over ten minutes on 2 cores), with the catalog's
  content vectors as the worker keeps them;
* starts ``streamrec run`` as a subprocess (SQLite store, snapshots on) and, for ``--minutes``,
  sends steady events (``--events-per-s``, users drawn from ``--users``, realtime stamps) and
  catalog churn each second: ``--churn-per-s`` vector updates of live items, as many brand-new
  items and as many deletes (so the live count stays about constant; new items take the
  deleted items' places in the graph, which so keeps its size without compactions);
* every ``--sample-s`` samples the worker's RSS (``/proc/PID/status``), the index's live and
  deleted counts and the entries of each part of the in-memory stream state (trending items,
  co-visitation users and pairs; its /metrics) and the row count of every table of its
  database;
* fails (exit 1) if any series still grows in its last third (``soak_report.still_grows``), and
  writes the table and plot to RELIABILITY.md (between the soak markers) and
  ``benchmarks/soak.png``.

Every bound that a run this short would otherwise never reach is shortened so that it is
reached well inside the run (``applied_events`` retention, co-visitation's pair budget,
trending's half-life and so its pruning horizon; more with ``--worker-env``); the report states
them. The soak checks that the bounds hold under churn, not their production values. The
compaction ratio is the worker's default unless ``--compact-ratio``.

``--seed-cache DIR`` keeps the trained model and the seeded snapshot (minutes at 1M items) for
the next run of the same ``--items`` and ``--dim``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from harness import HERE, ROOT, broker_settings, machine, model_or_small, run_lines, say
from soak_report import plot, table, verdicts, write_section
from throughput_workload import Catalog, Traffic, make_catalog

SERIES_FIXED = ("rss_bytes", "index_live", "index_deleted")
STATE_METRIC = "streamrec_stream_state_entries"  # trending items, co-visitation users and pairs


def seed_snapshot(settings: Any, files: Any, catalog: Catalog, offsets: dict[str, int]) -> None:
    """Write the snapshot a worker that read the whole catalog would have written."""
    from streamrec.ranking.index import ItemIndex
    from streamrec.ranking.snapshot import NewItemState, write_snapshot
    from streamrec.worker.snapshots import snapshot_identity

    # the catalog's items carry their vectors rounded to 5 decimals (``Catalog.ops``): the
    # index holds those, the trained items their trained vectors
    vectors = catalog.vectors.copy()
    vectors[catalog.trained :] = np.round(vectors[catalog.trained :], 5)
    index = ItemIndex(
        catalog.ids,
        vectors,
        m=settings.hnsw_m,
        ef_construction=settings.hnsw_ef_construction,
        ef_search=settings.hnsw_ef_search,
    )
    index.centroid = np.asarray(files.item_vectors, np.float32).mean(axis=0)
    new = catalog.ids[catalog.trained :]
    content = dict(zip(new, vectors[catalog.trained :], strict=True))
    identity = snapshot_identity(settings, files)
    write_snapshot(
        settings.index_snapshot_dir, identity, index, NewItemState(content, new), offsets, 1.0
    )


def seed_cache_dir(args: argparse.Namespace) -> Path | None:
    """Where ``--seed-cache`` keeps this workload's model and seeded snapshot (None: off, or a
    ``--model`` given: the cache holds a model trained here)."""
    if not args.seed_cache or args.model:
        return None
    return Path(args.seed_cache) / f"items{args.items}-d{args.dim}"


def save_seed(cache: Path, model_dir: Path, snapshot_root: Path, seed_s: float) -> None:
    """Keep the trained model and the seeded snapshot for later runs (``--seed-cache``)."""
    from streamrec.ranking.snapshot import list_snapshots

    tmp = cache.with_name(cache.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(model_dir, tmp / "model")
    shutil.copytree(list_snapshots(snapshot_root)[0], tmp / "snapshot")
    (tmp / "seed.json").write_text(json.dumps({"seed_s": seed_s}))
    shutil.rmtree(cache, ignore_errors=True)
    os.rename(tmp, cache)
    say(f"model and seeded snapshot kept in {cache}")


def restore_seed(cache: Path, settings: Any, files: Any, offsets: dict[str, int]) -> float:
    """Put the cached snapshot where the worker looks (hard links: the worker never writes
    into a snapshot, it prunes whole directories); returns the seed's original build seconds.

    Raises:
        SystemExit: the cached snapshot does not match this run (model, topic, graph
            parameters or offsets): the worker would ignore it.
    """
    from streamrec.ranking.snapshot import MANIFEST
    from streamrec.worker.snapshots import snapshot_identity

    manifest = json.loads((cache / "snapshot" / MANIFEST).read_text())
    want = dataclasses.asdict(snapshot_identity(settings, files))
    got = {k: manifest.get(k) for k in want}
    if got != want or manifest.get("offsets") != offsets:
        raise SystemExit(f"the cached seed in {cache} does not match this run: delete it")
    root = Path(settings.index_snapshot_dir)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(cache / "snapshot", root / "index-000000000001000", copy_function=_link)
    return float(json.loads((cache / "seed.json").read_text())["seed_s"])


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def end_offsets(bootstrap: str, topic: str) -> dict[str, int]:
    """The end offset of each partition of ``topic``."""
    from harness import assigned_consumer

    consumer = assigned_consumer(bootstrap, topic)
    try:
        ends = consumer.end_offsets(list(consumer.assignment()))
        return {str(tp.partition): int(o) for tp, o in ends.items()}
    finally:
        consumer.close()


class Load(threading.Thread):
    """Each second: ``events`` events and ``churn`` updates, new items and deletes."""

    def __init__(self, settings: Any, catalog: Catalog, args: argparse.Namespace) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaProducer

        self.settings, self.args = settings, args
        self.producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=20)
        self.traffic = Traffic(catalog, users=args.users, seed=3)
        self.vectors = catalog.vectors
        self.live = list(catalog.ids[catalog.trained :])  # catalog items (trained ones stay)
        self.next_new = len(catalog)
        self.rng = np.random.default_rng(4)
        self.stop = threading.Event()
        self.sent = {"events": 0, "updates": 0, "new": 0, "deletes": 0}

    def run(self) -> None:
        tick = time.monotonic()
        while not self.stop.is_set():
            self._second()
            tick += 1.0
            self.stop.wait(max(0.0, tick - time.monotonic()))
        self.producer.flush(30)
        self.producer.close(30)

    def _second(self) -> None:
        from streamrec.core.events import CatalogOp
        from streamrec.io.codec import encode_catalog, encode_event

        now_ms = int(time.time() * 1000)
        for event in self.traffic.events(self.args.events_per_s):
            event = dataclasses.replace(event, ts=now_ms)
            self.producer.send(
                self.settings.events_topic, key=event.user_id.encode(), value=encode_event(event)
            )
        churn, dim = self.args.churn_per_s, self.vectors.shape[1]
        ops = []
        for _ in range(churn):
            pos = int(self.rng.integers(len(self.live)))
            vec = self.vectors[pos % len(self.vectors)] + self.rng.normal(0, 0.01, dim)
            ops.append(CatalogOp(self.live[pos], "upsert", True, now_ms, _vec(vec)))
            new_id = f"n{self.next_new}"
            self.next_new += 1
            vec = self.vectors[int(self.rng.integers(len(self.vectors)))]
            ops.append(CatalogOp(new_id, "upsert", True, now_ms, _vec(vec)))
            gone = int(self.rng.integers(len(self.live)))
            ops.append(CatalogOp(self.live[gone], "delete", False, now_ms))
            self.live[gone] = new_id
        for op in ops:
            self.producer.send(
                self.settings.items_topic, key=op.item_id.encode(), value=encode_catalog(op)
            )
        for key in ("updates", "new", "deletes"):
            self.sent[key] += churn
        self.sent["events"] += self.args.events_per_s


def _vec(v: np.ndarray) -> tuple[float, ...]:
    return tuple(np.round(v, 5).tolist())


def start_worker(settings: Any, tmp: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    """``streamrec run`` on the broker and database of ``settings``, logging to a file."""
    child = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    child.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        STREAMREC_INDEX_SNAPSHOT_DIR=str(settings.index_snapshot_dir),
        STREAMREC_LOG_LEVEL="INFO",
        **env,
    )
    cmd = [
        sys.executable,
        "-m",
        "streamrec",
        "run",
        "--bootstrap-servers",
        settings.bootstrap_servers,
        "--model",
        str(settings.model_dir),
        "--db-url",
        settings.db_url,
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        str(port),
    ]
    log = open(tmp / "worker.log", "ab")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child)


def scrape(port: int) -> dict[str, float]:
    """The worker's metrics, each summed over its labels (name -> value); {} when it does not
    answer."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                number = float(value)
            except ValueError:
                continue
            base = name.split("{")[0]
            out[base] = out.get(base, 0.0) + number
            if base == STATE_METRIC and 'part="' in name:  # each part of the stream state
                out["state_" + name.split('part="', 1)[1].split('"', 1)[0]] = number
    return out


def rss_bytes(pid: int) -> float:
    """Resident set size of ``pid`` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    return float("nan")


def table_rows(db: Path) -> dict[str, float]:
    """Row count of every table of the worker's SQLite database (read-only)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        names = [
            r[0]
            for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if r[0] != "alembic_version" and not r[0].startswith("sqlite_")
        ]
        count = 'SELECT count(*) FROM "{}"'
        return {f"rows_{n}": float(con.execute(count.format(n)).fetchone()[0]) for n in names}
    finally:
        con.close()


def sample(pid: int, port: int, db: Path, t_s: float) -> dict[str, float]:
    """One sample of every series (module docstring)."""
    m = scrape(port)
    live = m.get("streamrec_index_items", float("nan"))
    ratio = m.get("streamrec_index_deleted_ratio", 0.0)
    deleted = round(ratio * live / (1 - ratio)) if ratio < 1 else float("nan")
    return {
        "t_s": t_s,
        "rss_bytes": rss_bytes(pid),
        "index_live": live,
        "index_deleted": float(deleted),
        "compactions": m.get("streamrec_index_compactions_total", 0.0),
        "events_consumed": m.get("streamrec_events_consumed_total", 0.0),
        **{k: v for k, v in m.items() if k.startswith("state_")},
        **table_rows(db),
    }


def wait_ready(proc: subprocess.Popen, port: int, timeout_s: float) -> float:
    """Seconds until /readyz answers 200; raises when the worker exits or times out."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited ({proc.returncode}) before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the worker was not ready within {timeout_s:.0f} s")


def soak(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Everything in the module docstring but the report; returns the samples and counts."""
    from streamrec.io.broker import free_port
    from streamrec.io.traffic import produce_catalog
    from streamrec.ranking.modelfiles import read_model_dir

    in_topic = args.catalog_topic if args.catalog_topic is not None else args.items <= 200_000
    cache = seed_cache_dir(args) if not in_topic else None
    cached = cache is not None and (cache / "model").is_dir() and (cache / "snapshot").is_dir()
    if cached:
        assert cache is not None
        say(f"reusing the trained model and the seeded snapshot in {cache}")
        model_dir = cache / "model"
    else:
        model_dir = model_or_small(args.model, args.dim, tmp)
    files = read_model_dir(model_dir)
    db = tmp / "worker.db"
    env = {
        "STREAMREC_APPLIED_EVENTS_RETENTION_HOURS": str(args.retention_hours),
        "STREAMREC_COVISIT_MAX_PAIRS": str(args.covisit_max_pairs),
        "STREAMREC_TRENDING_HALF_LIFE_S": str(args.trending_half_life_s or 3 * args.minutes),
        **dict(kv.split("=", 1) for kv in args.worker_env),
    }
    if args.compact_ratio is not None:
        env["STREAMREC_INDEX_COMPACT_DELETED_RATIO"] = str(args.compact_ratio)
    with broker_settings(
        tmp, model_dir, f"sqlite:///{db}", log_level="WARNING", index_snapshot_dir=tmp / "snaps"
    ) as (broker, settings):
        catalog = make_catalog(files.item_ids, files.item_vectors, args.items, seed=0)
        if in_topic:  # else the topic starts empty and the snapshot alone holds the catalog
            say(f"producing the catalog: {len(catalog):,} items")
            produce_catalog(broker.bootstrap, settings.items_topic, catalog.ops())
        started = time.monotonic()
        offsets = end_offsets(broker.bootstrap, settings.items_topic)
        if cached:
            assert cache is not None
            seed_s = restore_seed(cache, settings, files, offsets)
        else:
            say("seeding the index snapshot (bulk build)")
            seed_snapshot(settings, files, catalog, offsets)
            seed_s = time.monotonic() - started
            if cache is not None:
                save_seed(cache, model_dir, settings.index_snapshot_dir, seed_s)
        port = free_port()
        proc = start_worker(settings, tmp, port, env)
        try:
            ready_s = wait_ready(proc, port, 600)
            say(f"worker ready in {ready_s:.1f} s (pid {proc.pid}); soaking {args.minutes} min")
            load = Load(settings, catalog, args)
            load.start()
            samples, t0 = [], time.monotonic()
            next_at = 0.0
            while (t := time.monotonic() - t0) <= args.minutes * 60 + 1:
                if proc.poll() is not None:
                    raise SystemExit(f"the worker exited ({proc.returncode}) during the soak")
                if t >= next_at:
                    samples.append(sample(proc.pid, port, db, t))
                    s = samples[-1]
                    say(
                        f"{t / 60:5.1f} min rss {s['rss_bytes'] / 2**20:,.0f} MiB, live "
                        f"{s['index_live']:,.0f}, deleted {s['index_deleted']:,.0f}"
                    )
                    next_at += args.sample_s
                time.sleep(min(1.0, max(0.0, next_at - (time.monotonic() - t0))))
            load.stop.set()
            load.join(60)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return {
        "samples": samples,
        "sent": load.sent,
        "seed_s": seed_s,
        "ready_s": ready_s,
        "env": env,
        "dim": files.meta.dim,
        "in_topic": in_topic,
        "seed_cached": cached,
    }


def report(r: dict[str, Any], args: argparse.Namespace, info: dict[str, str]) -> tuple[str, bool]:
    """The RELIABILITY.md section and whether the soak passed."""
    samples = r["samples"]
    rows = sorted(k for k in samples[-1] if k.startswith(("state_", "rows_")))
    series = [*SERIES_FIXED, *rows]
    growth = verdicts(samples, series)
    passed = not any(g.grows for g in growth)
    png = Path(args.plot)
    plot(samples, series, png)
    sent, minutes = r["sent"], samples[-1]["t_s"] / 60
    env = ", ".join(f"`{k}={v}`" for k, v in r["env"].items()) or "none"
    lines = [
        "Written by `benchmarks/soak.py` (`make soak`); the run fails when a series still grows "
        "in its last third (`benchmarks/soak_report.py`: the fitted rise across the last third "
        "exceeds 5 % of its mean (2 % for RSS; at least 16 MiB of RSS, 4,096 trending rows "
        "(trending prunes from there on), 100 rows or items else) *and* "
        "its peak "
        "rises above the middle third's by as much; a bounded sawtooth passes).",
        "",
        *run_lines(info, "python"),
        f"- load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- workload: {args.items:,} catalog items (d = {r['dim']}), {minutes:.1f} minutes "
        f"sampled every {args.sample_s:.0f} s; each second {args.events_per_s} events from "
        f"{args.users:,} users and {args.churn_per_s} vector updates, {args.churn_per_s} new "
        f"items and {args.churn_per_s} deletes through the catalog topic (sent: "
        f"{sent['events']:,} events, {sent['updates']:,} updates, {sent['new']:,} new, "
        f"{sent['deletes']:,} deletes); {samples[-1]['events_consumed']:,.0f} events consumed, "
        f"{samples[-1]['compactions']:.0f} compactions",
        f"- catalog: seeded as the index snapshot a worker that read it would write (one bulk "
        f"build, {r['seed_s']:.0f} s"
        + (", reused from `--seed-cache`" if r.get("seed_cached") else "")
        + "), "
        + ("also produced to the catalog topic" if r["in_topic"] else "the topic starting empty")
        + "; churn and events then flow through the broker",
        f"- worker settings changed (windows shortened to fit the run): {env}; worker ready in "
        f"{r['ready_s']:.1f} s",
        "",
        f"**{'PASSED' if passed else 'FAILED'}**: "
        + (
            "no series grows in the last third."
            if passed
            else "still growing: " + ", ".join(g.name for g in growth if g.grows) + "."
        ),
        "",
        *table(samples, growth),
        "",
        f"![soak]({os.path.relpath(png, Path(args.out).parent)})",
    ]
    return "\n".join(lines) + "\n", passed


def main() -> None:
    """Parse the flags, soak, write the report; exit 1 when a series still grows."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="a model directory (default: train a small one)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--sample-s", type=float, default=60.0)
    p.add_argument("--events-per-s", type=int, default=20)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--churn-per-s", type=int, default=20)
    p.add_argument("--retention-hours", type=float, default=0.1, help="applied_events window")
    p.add_argument(
        "--compact-ratio",
        type=float,
        help="deleted share compacted (default: the worker's default)",
    )
    p.add_argument("--covisit-max-pairs", type=int, default=100_000)
    p.add_argument(
        "--trending-half-life-s",
        type=float,
        help="trending decay, so that its pruning horizon falls inside the run (default: "
        "3 s per minute of the run)",
    )
    p.add_argument(
        "--catalog-topic",
        action=argparse.BooleanOptionalAction,
        help="also produce the seeded catalog to its topic (default: up to 200,000 items)",
    )
    p.add_argument(
        "--seed-cache",
        help="keep the trained model and the seeded snapshot in this directory and reuse them "
        "in later runs of the same --items and --dim (the 1M seed takes minutes; only when the "
        "catalog topic starts empty)",
    )
    p.add_argument("--worker-env", nargs="*", default=[], help="KEY=VALUE for the worker")
    p.add_argument("--out", default=str(ROOT / "RELIABILITY.md"))
    p.add_argument("--plot", default=str(HERE / "soak.png"))
    p.add_argument("--json", help="also write the samples here")
    p.add_argument("--from-json", help="no run: report a run's --json again (same flags)")
    args = p.parse_args()
    info = machine()
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        info["load"] = result.get("load_at_start", info["load"])
    else:
        with tempfile.TemporaryDirectory(prefix="streamrec-soak-") as tmp:
            result = soak(args, Path(tmp))
        result["load_at_start"] = info["load"]
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    body, passed = report(result, args, info)
    write_section(Path(args.out), body)
    print(body)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
