"""The ML-100k replay **through Kafka** with 1, 2 and 4 real workers (threads of one process),
with and without global signals; writes benchmarks/scaleout_kafka.json and SCALEOUT_KAFKA.md.

    PYTHONPATH=. .venv/bin/python benchmarks/scaleout_kafka.py

Per configuration, on the embedded broker (topics with 4 partitions, fresh names) and a fresh
SQLite database:

1. the warm-up part (first 80 % by time; the model at ``--model`` was trained on it) is
   produced to the events topic and committed to the database as applied, with the users'
   states and the partitions' next offsets, as a worker would have left them
   (``throughput_warm``); the items of the log the model does not know are upserted on the
   catalog topic (no vector), as the replay announces them;
2. N workers start (``Worker.run`` on threads); each claims its partitions and restores its
   stream state from the applied events; with signals the restored ranges are published as
   deltas and merged by the other workers;
3. the test part is produced in user-disjoint chunks of 64 events, in time order, one chunk at
   a time: a chunk's events are scored against the list each user last received on the
   recommendations topic (test-then-train), then the next chunk waits until every event of
   this one was answered. A user's first test event has no list received yet and is not scored
   (the same events for every N).

NDCG@10 here is therefore not REPLAY.md's figure (those score every event, warm users on lists
computed at the cut); the comparison across N is what counts.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from harness import HERE, assigned_consumer, machine, publish, run_lines, say, table_head
from kafka import KafkaProducer
from throughput_warm import Warmup, write_warm_topic_and_db

from streamrec.core.events import CatalogOp
from streamrec.core.history import fold_events
from streamrec.evaluation.replay import (
    ReplayData,
    SegmentStats,
    check_no_leakage,
    load_log,
    user_disjoint_batches,
)
from streamrec.io.broker import EmbeddedBroker
from streamrec.io.clients import ensure_topics
from streamrec.io.codec import encode_catalog, encode_event
from streamrec.ops.settings import Settings, load_settings
from streamrec.ranking.modelfiles import read_model_dir
from streamrec.worker.loop import Worker

CHUNK = 64


@contextmanager
def workers_running(settings: Settings, n: int, timeout_s: float = 180) -> Iterator[list[Worker]]:
    """``n`` workers on threads, until each owns a share of the partitions and is ready."""
    stop = threading.Event()
    workers = [Worker(settings) for _ in range(n)]
    errors: list[BaseException] = []

    def run(worker: Worker) -> None:
        try:
            worker.run(stop)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in workers]
    deadline = time.monotonic() + timeout_s
    try:
        for worker, thread in zip(workers, threads, strict=True):
            thread.start()  # one at a time: the database migration is not thread-safe
            while not worker.ready()[0] and time.monotonic() < deadline and not errors:
                time.sleep(0.1)
        while time.monotonic() < deadline and not errors:
            owned = [len(w.generations) for w in workers]
            if all(owned) and sum(owned) == 4 and all(w.ready()[0] for w in workers):
                break
            time.sleep(0.2)
        if errors:
            raise errors[0]
        assert all(w.generations for w in workers), "the group did not settle"
        yield workers
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)


def run_config(
    broker: EmbeddedBroker, data: ReplayData, model: Path, tmp: Path, n: int, signals: bool
) -> dict[str, Any]:
    """One configuration (module docstring); returns its NDCG@10 and counts."""
    started = time.perf_counter()
    tag = uuid.uuid4().hex[:8]
    settings = load_settings(
        bootstrap_servers=broker.bootstrap,
        model_dir=model,
        db_url=f"sqlite:///{tmp / f'state-{tag}.db'}",
        metrics_port=0,
        group_id=f"g-{tag}",
        events_topic=f"events-{tag}",
        items_topic=f"items-{tag}",
        recs_topic=f"recs-{tag}",
        dlq_topic=f"dlq-{tag}",
        signals_topic=f"signals-{tag}" if signals else "",
        poll_timeout_ms=20,
        applied_events_retention_hours=0,  # ML-100k's 1998 timestamps: keep the dedupe rows
    )
    ensure_topics(settings, partitions=4)
    known = set(data.files.item_ids)
    new_items = sorted({e.item_id for e in data.test if e.item_id not in known})
    _announce(settings, new_items)
    warm = Warmup(data.warmup, fold_events(data.warmup, settings.history_max_len))
    write_warm_topic_and_db(settings, warm)
    recs = assigned_consumer(broker.bootstrap, settings.recs_topic)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0)
    current: dict[str, list[str]] = {}
    overall = SegmentStats()
    skipped = 0
    with workers_running(settings, n) as workers:
        say(f"{n} workers, signals {signals}: settled; replaying {len(data.test)} events")
        for chunk in user_disjoint_batches(data.test, CHUNK):
            for event in chunk:
                shown = current.get(event.user_id)
                if shown is None:
                    skipped += 1
                else:
                    overall.add(shown, event.item_id, settings.top_k)
            for event in chunk:
                key, value = event.user_id.encode(), encode_event(event)
                producer.send(settings.events_topic, key=key, value=value)
            producer.flush()
            _await_answers(recs, {e.event_id for e in chunk}, current)
        deltas = _signal_counts(workers)
    recs.close()
    producer.close()
    return {
        "workers": n,
        "signals": signals,
        "overall": overall.summary(),
        "not_scored_first_test_events": skipped,
        "signal_deltas": deltas,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _announce(settings: Settings, items: list[str]) -> None:
    """Upsert the log's items the model does not know on the catalog topic (no vector)."""
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    for item in items:
        op = encode_catalog(CatalogOp(item, "upsert", True, 0))
        producer.send(settings.items_topic, key=item.encode(), value=op)
    producer.flush()
    producer.close()


def _await_answers(
    recs: Any, pending: set[str], current: dict[str, list[str]], timeout_s: float = 120
) -> None:
    """Read recommendations until every event in ``pending`` was answered."""
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for batch in recs.poll(timeout_ms=50, max_records=2000).values():
            for r in batch:
                body = json.loads(r.value)
                current[body["user_id"]] = [it["item_id"] for it in body["items"]]
                pending.discard(body["event_id"])
    if pending:
        raise RuntimeError(f"{len(pending)} events not answered within {timeout_s} s")


def _signal_counts(workers: list[Worker]) -> dict[str, float]:
    """Deltas by outcome, summed over the workers (their metrics)."""
    out: dict[str, float] = {}
    for w in workers:
        for metric in w.metrics.signal_deltas.collect():
            for s in metric.samples:
                if s.name.endswith("_total"):
                    key = s.labels["outcome"]
                    out[key] = out.get(key, 0.0) + s.value
    return out


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """SCALEOUT_KAFKA.md from the report."""
    rows = report["runs"]
    base = next(r for r in rows if r["workers"] == 1)["overall"]["ndcg@10"]
    lines = [
        "# Scale-out through Kafka: 1, 2 and 4 workers on ML-100k",
        "",
        *run_lines(report["machine"], "python"),
        "- Workers: the real `Worker` (threads of one process, one embedded broker, SQLite), "
        "events topic of 4 partitions keyed by user; `STREAMREC_SIGNALS_INTERVAL_MS` 1000 "
        "(the default) when signals are on. Protocol: `benchmarks/scaleout_kafka.py`'s "
        f"docstring (warm-up restored from the database; {report['test']} test events produced "
        f"in user-disjoint chunks of {CHUNK}, each scored on the list the user last received; "
        "a user's first test event is not scored).",
        "",
        *table_head(["workers", "signals", "NDCG@10", "x 1 worker", "HR@10", "scored", "deltas"]),
    ]
    for r in rows:
        nd = r["overall"]["ndcg@10"]
        lines.append(
            f"| {r['workers']} | {'on' if r['signals'] else 'off'} | {nd:.4f} | "
            f"{nd / base:.3f} | {r['overall']['hr@10']:.4f} | {r['overall']['n']} | "
            f"{r['signal_deltas'] or '-'} |"
        )
    for r in rows:
        if r["workers"] == 4 and r["signals"]:
            ratio = r["overall"]["ndcg@10"] / base
            verdict = "pass" if ratio >= 0.98 else "**FAIL**"
            lines += [
                "",
                f"4 workers with signals / 1 worker: {ratio:.3f} (bound >= 0.98): {verdict}.",
            ]
    publish(path, "\n".join(lines) + "\n")


@click.command()
@click.option("--data", default="/work/shared/datasets/ml-100k/u.data", show_default=True)
@click.option("--model", default="/tmp/replay-ml100k/model", show_default=True)
@click.option("--tmp", default="/tmp/scaleout-kafka", show_default=True)
@click.option("--resume", is_flag=True, help="keep the runs scaleout_kafka.json already holds")
def main(data: str, model: str, tmp: str, resume: bool) -> None:
    """1 worker, 2 and 4 with signals, 4 without."""
    info = machine()
    events = load_log(data)
    files = read_model_dir(Path(model))
    replay_data = ReplayData.build(events, files, 0.8)
    check_no_leakage(files, replay_data.warmup)
    work = Path(tmp)
    work.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    if resume and (HERE / "scaleout_kafka.json").is_file():
        runs = json.loads((HERE / "scaleout_kafka.json").read_text())["runs"]
    report = {"machine": info, "test": len(replay_data.test), "runs": runs}
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        for n, signals in ((1, False), (4, True), (4, False), (2, True)):
            if any(r["workers"] == n and r["signals"] == signals for r in runs):
                continue
            run = run_config(broker, replay_data, Path(model), work, n, signals)
            click.echo(f"{n} workers, signals {signals}: {run}")
            runs.append(run)
            report = {"machine": info, "test": len(replay_data.test), "runs": runs}
            (HERE / "scaleout_kafka.json").write_text(json.dumps(report, indent=2))
    write_markdown(report, HERE / "SCALEOUT_KAFKA.md")


if __name__ == "__main__":
    main()
