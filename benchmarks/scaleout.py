"""N workers give the quality of one: the ML-100k replay split over 1, 2 and 4 workers, with and
without the global-signals exchange; writes benchmarks/SCALEOUT.md.

    .venv/bin/python benchmarks/scaleout.py [--data ../shared/datasets/ml-100k/u.data]

An **in-process simulation** of the deployment (not through Kafka): the log's users are keyed to
``--partitions`` input partitions (crc32 of the user id, as a keyed producer would spread them);
worker ``w`` of ``N`` owns the partitions ``p`` with ``p % N == w``. Each worker has its own
index and fused ranker and runs the worker's batch code (``Pipeline.process``) on the records of
its partitions only, with real partition offsets. With the exchange, every ``--interval-events``
events of the log each worker's recorded deltas (``streamrec.ranking.signals``) go through the
signals topic's record encoding (``streamrec.worker.signals.encode_delta`` / ``decode_delta``)
and every worker merges all of them (its own are skipped as duplicates), exactly what the
worker's ``SignalExchange`` does between two batches. Protocol otherwise that of
``benchmarks/replay.py``: the model is trained on the first 80 % by time; the warm-up part is
counted by the owners of its partitions (and exchanged at the same interval); the rest is
replayed test-then-train in user-disjoint batches of 64, each user's list scored before the
user's event, online NDCG@10 as in REPLAY.md (fused ranking, the worker's default settings).
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from harness import (
    HERE,
    data_option,
    epochs_option,
    machine,
    publish,
    run_lines,
    table_head,
    train_warmup_model,
)

from streamrec.core.events import Event
from streamrec.core.history import EMPTY, fold_events
from streamrec.evaluation.replay import (
    ReplayData,
    SegmentStats,
    check_no_leakage,
    history_segment,
    load_log,
    user_disjoint_batches,
)
from streamrec.io.codec import encode_event
from streamrec.ops.settings import Settings, load_settings
from streamrec.ranking.encoder import Encoder
from streamrec.ranking.explore import ShownItem
from streamrec.ranking.index import ItemIndex
from streamrec.ranking.rank import exclusions
from streamrec.ranking.ranker import Ranker, RankingConfig
from streamrec.state.memory import MemoryStateReader
from streamrec.worker.signals import decode_delta, encode_delta, make_recorder
from streamrec.worker.step import Pipeline, Record


def partition_of(user_id: str, partitions: int) -> int:
    """The user's input partition (a stable hash, as a keyed producer spreads users)."""
    return zlib.crc32(user_id.encode()) % partitions


@dataclass
class SimWorker:
    """One worker of the simulation: its partitions, index, ranker and pipeline."""

    owned: set[int]
    ranker: Ranker
    pipeline: Pipeline
    index: ItemIndex


STEPS = ("take+encode", "decode", "merge")


@dataclass
class Exchange:
    """What went through the signals topic."""

    deltas: int = 0
    bytes: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))
    merged_events: int = 0  # events of applied deltas, summed over the merging workers

    def run(self, workers: list[SimWorker], now_s: float) -> None:
        """Every worker publishes its deltas; every worker merges all of them."""
        t0 = time.perf_counter()
        values = []
        for w in workers:
            assert w.ranker.recorder is not None
            values += [encode_delta(d) for d in w.ranker.recorder.take(now_s)]
        self.deltas += len(values)
        self.bytes += sum(len(v) for v in values)
        t1 = time.perf_counter()
        decoded = [decode_delta(v) for v in values]
        t2 = time.perf_counter()
        for w in workers:
            for delta in decoded:
                outcome = w.ranker.merge_signals(delta)
                self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
                if outcome == "applied":
                    self.merged_events += delta.end - delta.start
        t3 = time.perf_counter()
        for step, seconds in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            self.seconds[step] += seconds


def simulate(
    data: ReplayData,
    encoder: Encoder,
    settings: Settings,
    n_workers: int,
    partitions: int,
    signals: bool,
    interval: int,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Replay the test part over ``n_workers`` workers (module docstring)."""
    started = time.perf_counter()
    config = RankingConfig.from_settings(settings)
    k = settings.top_k
    clock_s = [data.warmup[-1].ts / 1000.0]
    workers = []
    for w in range(n_workers):
        index = ItemIndex(data.files.item_ids, data.files.item_vectors)
        ranker = Ranker(encoder, index, config, trained=data.files.item_ids)
        if signals:
            ranker.recorder = make_recorder(settings, ranker, f"w{w}")
        pipeline = Pipeline(
            settings, encoder, index, data.files.meta.version, lambda: clock_s[0], ranker=ranker
        )
        owned = {p for p in range(partitions) if p % n_workers == w}
        workers.append(SimWorker(owned, ranker, pipeline, index))
    owner = {p: workers[p % n_workers] for p in range(partitions)}
    offsets = [0] * partitions
    exchange = Exchange()

    def place(event: Event) -> tuple[int, int]:
        p = partition_of(event.user_id, partitions)
        offsets[p] += 1
        return p, offsets[p] - 1

    for n, event in enumerate(data.warmup, 1):
        p, offset = place(event)
        owner[p].ranker.observe(event, p, offset)
        if signals and n % interval == 0:
            exchange.run(workers, 0.0)
    if signals:
        exchange.run(workers, 0.0)
    store = MemoryStateReader()
    store.users = fold_events(data.warmup, settings.history_max_len)
    store.applied_ids = {e.event_id for e in data.warmup}
    current = _warm_lists(workers, owner, store, partitions, settings)
    overall = SegmentStats()
    segments = {s: SegmentStats() for s in ("history=0", "history=1-4", "history=5-19")}
    segments["history=20+"] = SegmentStats()
    since = 0
    for batch in user_disjoint_batches(data.test, batch_size):
        by_worker: dict[int, list[Record]] = {}
        for event in batch:
            for sim in workers:  # the catalog announces a new item to every worker
                if event.item_id not in sim.index:
                    sim.index.upsert(event.item_id, None, available=True)
            p, offset = place(event)
            worker = owner[p]
            shown = current.get(event.user_id)
            if shown is None:
                shown = worker.ranker.recommend_batch([EMPTY], [set()], k, keys=[event.event_id])[0]
            state = store.users.get(event.user_id, EMPTY)
            ids = [s.item_id for s in shown]
            overall.add(ids, event.item_id, k)
            segments[history_segment(state.n_events)].add(ids, event.item_id, k)
            key = event.user_id.encode()
            record = Record(settings.events_topic, p, offset, key, encode_event(event), event.ts)
            by_worker.setdefault(id(worker), []).append(record)
        clock_s[0] = batch[-1].ts / 1000.0
        for worker in workers:
            records = by_worker.get(id(worker))
            if not records:
                continue
            write, _ = worker.pipeline.process(records, store, {p: 0 for p in worker.owned})
            store.users.update(write.users)
            store.applied_ids.update(a.event.event_id for a in write.applied)
            for user, shown in worker.pipeline.last_shown:
                current[user] = shown
        since += len(batch)
        if signals and since >= interval:
            exchange.run(workers, clock_s[0])
            since = 0
    return {
        "workers": n_workers,
        "signals": signals,
        "overall": overall.summary(),
        "segments": {s: v.summary() for s, v in segments.items()},
        "exchange": {
            "deltas": exchange.deltas,
            "bytes": exchange.bytes,
            "outcomes": exchange.outcomes,
            "seconds": {k: round(v, 2) for k, v in exchange.seconds.items()},
            "merged_events": exchange.merged_events,
        },
        "events": len(data.warmup) + len(data.test),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _warm_lists(
    workers: list[SimWorker],
    owner: dict[int, SimWorker],
    store: MemoryStateReader,
    partitions: int,
    settings: Settings,
) -> dict[str, list[ShownItem]]:
    """Each warm-up user's list at the cut, from the worker that owns the user."""
    current: dict[str, list[ShownItem]] = {}
    for worker in workers:
        users = sorted(u for u in store.users if owner[partition_of(u, partitions)] is worker)
        for start in range(0, len(users), 256):
            chunk = users[start : start + 256]
            states = [store.users[u] for u in chunk]
            excl = [exclusions(s, settings.exclude_history) for s in states]
            lists = worker.ranker.recommend_batch(states, excl, settings.top_k, keys=chunk)
            current.update(zip(chunk, lists, strict=True))
    return current


def _per_event(run: dict[str, Any]) -> str:
    """Take+encode and decode per event of the log, merge per event merged (a worker merges
    every event of the others' partitions)."""
    ex = run["exchange"]
    if not ex["deltas"]:
        return "- | -"
    sec, n = ex["seconds"], run["events"]
    encode, decode = 1e6 * sec["take+encode"] / n, 1e6 * sec["decode"] / n
    merge = 1e6 * sec["merge"] / max(ex["merged_events"], 1)
    return f"{encode:.0f} / {decode:.0f} | {merge:.0f}"


def _signals(run: dict[str, Any]) -> str:
    return f"on ({run['max_pairs']})" if run["signals"] else "off"


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """SCALEOUT.md from the report."""
    rows = report["runs"]
    base = next(r for r in rows if r["workers"] == 1)["overall"]["ndcg@10"]
    lines = [
        "# Scale-out: N workers, one worker's quality (global signals)",
        "",
        *run_lines(report["machine"], "python"),
        f"- Data: `{report['data']}`, {report['warmup']} warm-up events (first 80 % by time: "
        f"they train the model and warm the state), {report['test']} replayed test-then-train "
        "(as `benchmarks/replay.py`: online NDCG@10 of the list current for the user before "
        "each event; fused ranking, the worker's default settings).",
        f"- **In-process simulation, not through Kafka**: users keyed to {report['partitions']} "
        "partitions (crc32 of the user id), worker w of N owns partitions p with p % N == w and "
        "runs `Pipeline.process` on them with its own index and ranker. With signals, every "
        f"{report['interval']} events of the log the workers' deltas go through the signals "
        "topic's record encoding and every worker merges all of them (its own skipped as "
        "duplicates), as `SignalExchange` does between batches. At 1,000 events/s over the "
        f"cluster and the default `STREAMREC_SIGNALS_INTERVAL_MS` of 1 s, {report['interval']} "
        "events is about the same or a longer lag.",
        "",
        *table_head(
            [
                "workers",
                "signals (pairs per delta at most)",
                "NDCG@10",
                "x 1 worker",
                "HR@10",
                "NDCG h=1-4",
                "NDCG h=20+",
                "deltas",
                "delta bytes / event",
                "µs per event: take+encode / decode (once each)",
                "µs per merged event",
                "s",
            ]
        ),
    ]
    for r in rows:
        ex = r["exchange"]
        nd = r["overall"]["ndcg@10"]
        lines.append(
            f"| {r['workers']} | {_signals(r)} | {nd:.4f} | {nd / base:.3f} | "
            f"{r['overall']['hr@10']:.4f} | {r['segments']['history=1-4']['ndcg@10']:.4f} | "
            f"{r['segments']['history=20+']['ndcg@10']:.4f} | {ex['deltas']} | "
            f"{ex['bytes'] / r['events']:.0f} | {_per_event(r)} | {r['seconds']} |"
        )
    lines += ["", "## Bar of issue 16", ""]
    for r in rows:
        if r["workers"] == 4 and r["signals"]:
            ratio = r["overall"]["ndcg@10"] / base
            verdict = "pass" if ratio >= 0.98 else "**FAIL**"
            lines.append(
                f"- 4 workers with signals ({_signals(r)}) / 1 worker, online NDCG@10: "
                f"{ratio:.3f} (bound >= 0.98): {verdict}."
            )
    lines += [
        "",
        "Delta bytes are the JSON record values (no producer compression). A worker records "
        "and encodes its own events' deltas once, and decodes and merges every event of the "
        "other workers' partitions: that per-event price is paid by each worker for the whole "
        "cluster's traffic (SCALING.md). Timings are on the shared machine (load above).",
    ]
    lines += [
        "",
        "Delta outcomes (all workers, all merges): "
        + "; ".join(
            f"{r['workers']} workers: {r['exchange']['outcomes']}" for r in rows if r["signals"]
        ),
    ]
    publish(path, "\n".join(lines) + "\n")


@click.command()
@data_option
@click.option("--model", default="/tmp/replay-ml100k/model", show_default=True)
@click.option("--partitions", default=4, show_default=True)
@click.option("--interval-events", "interval", default=500, show_default=True)
@click.option(
    "--capped-pairs", default=2000, show_default=True, help="pairs per delta of the extra row"
)
@epochs_option
def main(
    data: str, model: str, partitions: int, interval: int, capped_pairs: int, epochs: int
) -> None:
    """Replay over 1, 2 and 4 workers, with and without signals; write SCALEOUT.md."""
    from streamrec.ranking.encoder import OnnxEncoder
    from streamrec.ranking.modelfiles import read_model_dir

    info = machine()
    events = load_log(data)
    train_warmup_model(data, Path(model), 0.8, epochs, events)
    files = read_model_dir(Path(model))
    replay_data = ReplayData.build(events, files, 0.8)
    check_no_leakage(files, replay_data.warmup)
    encoder = OnnxEncoder(files.encoder_path(), files.meta.dim, files.meta.max_len, 1)
    settings = load_settings()
    runs = []
    capped = settings.model_copy(update={"signals_max_pairs": capped_pairs})
    plan = [(1, False, settings), (2, False, settings), (2, True, settings)]
    plan += [(4, False, settings), (4, True, settings), (4, True, capped)]
    for n, signals, run_settings in plan:
        run = simulate(replay_data, encoder, run_settings, n, partitions, signals, interval)
        run["max_pairs"] = run_settings.signals_max_pairs if signals else None
        click.echo(f"{n} workers, signals {signals}: {run['overall']} ({run['seconds']} s)")
        runs.append(run)
    report = {
        "data": data,
        "machine": info,
        "partitions": partitions,
        "interval": interval,
        "warmup": len(replay_data.warmup),
        "test": len(replay_data.test),
        "runs": runs,
    }
    (HERE / "scaleout.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    write_markdown(report, HERE / "SCALEOUT.md")


if __name__ == "__main__":
    main()
