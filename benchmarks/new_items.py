"""New items through the whole worker: from the first evidence to the first list that shows them.

One run, one process, writes ``benchmarks/NEW_ITEMS.md`` (and re-assembles BENCHMARKS.md):

* the embedded broker, a small model (trained here on simulated traffic unless ``--model``),
  the ``Worker`` in a thread with the product's default settings (fused ranking, exploration
  0.05), and background traffic from the simulator at ``--rate`` events/s, produced by a
  separate process (so that it does not compete with the worker for the GIL);
* then ``--new-items`` items the model never saw are introduced one at a time. Item N is first
  upserted in the catalog without a vector (the index holds it at the centroid: an id seen only
  in events is never recommended), then an
  evidence user clicks two trained items A and B (rarely visited ones, so that the background
  traffic does not crowd N out of their co-visitation neighbourhood) and then N: that click is
  the first evidence, N now co-occurs with trained items. Right after it, a probe user clicks
  A then B. Both users' events go to one partition, in that order;
* for each item: evidence produced -> N searchable in the worker's index (polled in-process),
  and evidence produced -> the first published list containing N read by a consumer (the
  latency the product goal is about: recommendable within 1 s), plus the same from Kafka
  record timestamps (evidence record -> that list's record, both stamped at ``send``).

Usage::

    python benchmarks/new_items.py                        # trains a small model first (~20 s)
    python benchmarks/new_items.py --model /tmp/demo/model --new-items 30 --rate 50
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    HERE,
    PARTITIONS,
    assigned_consumer,
    broker_settings,
    check_model_dir,
    machine,
    pct,
    publish,
    run_lines,
    say,
    table_head,
    train_simulated,
    wait_claimed,
)
from kafka import KafkaProducer

from streamrec.core.events import CatalogOp, Event
from streamrec.io.codec import encode_catalog, encode_event
from streamrec.io.simulate import SimConfig, Simulator
from streamrec.io.traffic import produce_events
from streamrec.ops.settings import Settings
from streamrec.ranking.modelfiles import read_model_dir
from streamrec.worker import Worker

NEW_PREFIX = "new-item-"
GOAL_S = 1.0


@dataclass
class Probe:
    """One new item's timeline (monotonic seconds; Kafka timestamps in ms)."""

    item: str
    context: tuple[str, str]
    produced: float = float("nan")
    evidence_ts_ms: int = 0
    searchable: float = float("nan")
    seen: float = float("nan")
    seen_ts_ms: int = 0
    seen_by: str = ""

    def ms(self, t: float) -> float:
        """Milliseconds from producing the evidence to ``t`` (NaN when it never happened)."""
        return (t - self.produced) * 1000


@dataclass
class Reader:
    """Reads the recommendations topic in a thread; remembers where each new item first shows."""

    bootstrap: str
    topic: str
    first: dict[str, tuple[float, int, str]] = field(default_factory=dict)
    lists: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        consumer = assigned_consumer(self.bootstrap, self.topic)
        self.thread = threading.Thread(target=self._run, args=(consumer,), daemon=True)
        self.thread.start()

    def _run(self, consumer: Any) -> None:
        try:
            while not self.stop.is_set():
                for batch in consumer.poll(timeout_ms=50, max_records=2000).values():
                    now = time.monotonic()
                    for r in batch:
                        self._record(now, r)
        finally:
            consumer.close()

    def _record(self, now: float, r: Any) -> None:
        msg = json.loads(r.value)
        self.lists += 1
        for it in msg["items"]:
            item = it["item_id"]
            if item.startswith(NEW_PREFIX) and item not in self.first:
                self.first[item] = (now, r.timestamp, msg["event_id"])


def train_model(tmp: Path) -> tuple[Path, str]:
    """A small SASRec model on simulated traffic (the shop the background traffic comes from)."""
    from streamrec.training.train import TrainConfig

    note = "training a small model on 10,000 simulated events (10 epochs, dim 32, max_len 50) ..."
    config = TrainConfig(epochs=10, max_len=50, dim=32, progress=False, threads=1)
    model_dir, _, seconds = train_simulated(tmp, 10_000, config, note)
    return model_dir, f"trained here: 10,000 simulated events, 10 epochs, {seconds:.0f} s"


def quiet_pairs(traffic: list[Event], trained: list[str], n: int) -> list[tuple[str, str]]:
    """``n`` pairs of trained items the background traffic visits least (disjoint pairs)."""
    visits = Counter(e.item_id for e in traffic)
    order = sorted(trained, key=lambda i: (visits[i], i))
    return [(order[2 * j], order[2 * j + 1]) for j in range(n)]


def send(prod: KafkaProducer, topic: str, event: Event, partition: int) -> Any:
    """Produce one event to an explicit partition (one user's events stay in order)."""
    return prod.send(
        topic, key=event.user_id.encode(), value=encode_event(event), partition=partition
    )


def announce(prod: KafkaProducer, settings: Settings, item: str, worker: Worker) -> None:
    """The catalog upserts the new item (no vector) and the worker's index holds it.

    Only items the catalog knows become recommendable (``streamrec.ranking.coldstart``); an id
    seen only in events never does.
    """
    op = CatalogOp(item, "upsert", True, int(time.time() * 1000))
    prod.send(settings.items_topic, key=item.encode(), value=encode_catalog(op)).get(30)
    deadline = time.monotonic() + 30
    while item not in worker.model.index and time.monotonic() < deadline:
        time.sleep(0.002)


def introduce(prod: KafkaProducer, settings: Settings, probe: Probe, j: int) -> None:
    """Evidence for one new item, then the probe user's events; times the evidence."""
    a, b = probe.context
    part = j % PARTITIONS
    now_ms = int(time.time() * 1000)
    evidence_user, probe_user = f"bench-evidence-{j}", f"bench-probe-{j}"
    topic = settings.events_topic
    for n, item in enumerate((a, b)):
        send(prod, topic, Event(f"ctx-{j}-{n}", evidence_user, item, "click", now_ms + n), part)
    prod.flush(30)
    probe.produced = time.monotonic()
    evidence = send(
        prod, topic, Event(f"new-{j}", evidence_user, probe.item, "click", now_ms + 2), part
    )
    for n, item in enumerate((a, b)):
        send(prod, topic, Event(f"probe-{j}-{n}", probe_user, item, "click", now_ms + 3 + n), part)
    prod.flush(30)
    probe.evidence_ts_ms = evidence.get(30).timestamp


def wait_for(probe: Probe, worker: Worker, reader: Reader, timeout_s: float) -> None:
    """Poll the worker's index and the reader until the item was seen in a list (or timeout)."""
    deadline = probe.produced + timeout_s
    while time.monotonic() < deadline:
        if probe.searchable != probe.searchable and worker.model.index.is_live(probe.item):
            probe.searchable = time.monotonic()
        if probe.item in reader.first:
            probe.seen, probe.seen_ts_ms, probe.seen_by = reader.first[probe.item]
            return
        time.sleep(0.002)


def worker_metrics(worker: Worker) -> dict[str, float]:
    """The cold-start metrics of the worker's registry, as Prometheus would scrape them."""
    out: dict[str, float] = {}
    for family in worker.metrics.registry.collect():
        for s in family.samples:
            if s.name == "streamrec_recommended_slots_total":
                out[f"slots{{source={s.labels['source']},item={s.labels['item']}}}"] = s.value
            elif s.name in ("streamrec_new_item_vectors_total", "streamrec_new_items"):
                out[s.name] = s.value
    return out


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The whole measurement; returns the report."""
    model_dir, model_note = (
        (Path(args.model), "given with --model") if args.model else train_model(tmp)
    )
    files = read_model_dir(check_model_dir(model_dir))
    traffic = list(Simulator(SimConfig(seed=11)).events(int(args.rate * 600)))
    pairs = quiet_pairs(traffic, list(files.item_ids), args.new_items)
    probes = [Probe(f"{NEW_PREFIX}{j}", pairs[j]) for j in range(args.new_items)]
    report: dict[str, Any] = {
        "model": f"{files.meta.version} (dim {files.meta.dim}, "
        f"max_len {files.meta.max_len}, {len(files.item_ids)} items; "
        f"{model_note})",
        "machine": machine(),
    }
    with broker_settings(tmp, model_dir, f"sqlite:///{tmp / 'state.db'}") as (_, settings):
        worker = Worker(settings)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        if not wait_claimed(worker, 60):
            raise SystemExit("the worker did not claim its partitions within 60 s")
        reader = Reader(settings.bootstrap_servers, settings.recs_topic)
        reader.start()
        halt = mp.get_context("spawn").Event()
        background = mp.get_context("spawn").Process(
            target=produce_events,
            args=(settings.bootstrap_servers, settings.events_topic, traffic),
            kwargs={"rate": args.rate, "realtime": True, "stop": halt},
            daemon=True,
        )
        background.start()
        say(f"background traffic at {args.rate:.0f} events/s; warming up {args.warmup_s:.0f} s")
        time.sleep(args.warmup_s)
        prod = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=0)
        started = time.monotonic()
        lists_before = reader.lists
        for j, probe in enumerate(probes):
            announce(prod, settings, probe.item, worker)
            introduce(prod, settings, probe, j)
            wait_for(probe, worker, reader, args.timeout_s)
            say(
                f"{probe.item}: searchable {probe.ms(probe.searchable):.0f} ms, "
                f"in a list {probe.ms(probe.seen):.0f} ms"
            )
            time.sleep(args.gap_s)
        phase_s = time.monotonic() - started
        time.sleep(1.0)  # late lists (and metrics) of the last item
        report["metrics"] = worker_metrics(worker)
        report["lists_during"] = reader.lists - lists_before
        report["phase_s"] = phase_s
        report["settings"] = settings
        prod.close()
        halt.set()
        background.join(timeout=30)
        stop.set()
        thread.join(timeout=30)
        reader.stop.set()
    report["probes"] = probes
    return report


def summary(values: list[float]) -> str:
    """``p50 / p95 / max`` in ms, or a dash."""
    if not values:
        return "— | — | —"
    return f"{pct(values, 50):.0f} | {pct(values, 95):.0f} | {max(values):.0f}"


def write_markdown(report: dict[str, Any], args: argparse.Namespace, path: Path) -> Path:
    """The section of BENCHMARKS.md; re-assembles it and returns its path."""
    probes: list[Probe] = report["probes"]
    settings: Settings = report["settings"]
    seen = [p for p in probes if p.seen == p.seen]
    searchable = [p.ms(p.searchable) for p in probes if p.searchable == p.searchable]
    recommendable = [p.ms(p.seen) for p in seen]
    by_ts = [float(p.seen_ts_ms - p.evidence_ts_ms) for p in seen]
    within = sum(1 for v in recommendable if v <= GOAL_S * 1000)
    metrics = report["metrics"]
    new_slots = {k: v for k, v in metrics.items() if k.endswith("item=new}") and v}
    vectors = metrics.get("streamrec_new_item_vectors_total", 0)
    lines = [
        "# New items: evidence to recommendable (`benchmarks/new_items.py`)",
        "",
        *run_lines(report["machine"], "python"),
        f"- model: {report['model']}",
        f"- worker: one `Worker` thread, product defaults (ranking `{settings.ranking}`, top_k "
        f"{settings.top_k}, explore_rate {settings.explore_rate}, poll_timeout_ms "
        f"{settings.poll_timeout_ms}, batch_max_events {settings.batch_max_events}), SQLite, "
        f"embedded tansu broker (memory), {PARTITIONS} partitions, same machine",
        f"- background traffic: simulated shop at {args.rate:.0f} events/s (a separate "
        f"process, event times = now), {args.warmup_s:.0f} s of warm-up before the first new "
        f"item; {report['lists_during']} lists published while the {len(probes)} new items "
        f"were introduced ({report['phase_s']:.0f} s, {args.gap_s} s between items)",
        "- per new item: an evidence user clicks two rarely visited trained items, then the "
        "new item (the evidence, timed from its `send`); a probe user then clicks the same two "
        'items. A list "contains" the item when any published recommendation lists it.',
        "",
        f"**{len(seen)} of {len(probes)} new items became recommendable** (shown in a published "
        f"list within {args.timeout_s:.0f} s); **{within} of {len(probes)} within the 1 s goal**.",
        "",
        *table_head(["evidence produced →", "n", "p50 ms", "p95 ms", "max ms"], "lrrrr"),
        f"| searchable in the worker's index (polled in-process) | {len(searchable)} | "
        f"{summary(searchable)} |",
        f"| **first published list containing it, read by a consumer** | {len(recommendable)} | "
        f"{summary(recommendable)} |",
        f"| same, Kafka timestamps (evidence record → that list's record) | {len(by_ts)} | "
        f"{summary(by_ts)} |",
        "",
        "Worker metrics at the end (`/metrics`): "
        f"`streamrec_new_item_vectors_total` {vectors:.0f}, "
        f"`streamrec_new_items` {metrics.get('streamrec_new_items', 0):.0f}, "
        "`streamrec_recommended_slots_total` for new items: "
        + (", ".join(f"`{k}` {v:.0f}" for k, v in sorted(new_slots.items())) or "none"),
        "",
        "Per item (ms from the evidence's send): "
        + ", ".join(f"{p.ms(p.seen):.0f}" if p.seen == p.seen else "never" for p in probes),
        "",
        "Notes: the consumer-side figure includes the reader's own fetch (it polls with "
        "`fetch_max_wait_ms` 10; it and the in-process index poll share the GIL with the worker "
        "thread) and the worker's batching (a batch's lists are published after its database "
        "commit); the Kafka-timestamp figure stops at the worker's `send`. The vector is "
        "written once the batch that holds the evidence is ranked (the HNSW write in the "
        "background), so the next batch's lists can hold the item: what bounds "
        "evidence-to-recommendable is the event-to-recommendation latency (plus the wait for "
        "someone's next event): under a backlog it grows with the queue like every "
        "event's (`streamrec_event_to_recommendation_seconds`, alert `StreamrecLatencyHigh`). "
        "The probe "
        "is built to surface the item (rarely visited context items, history excluded, so "
        "co-visitation ranks the new item first); how often new items reach other users' lists "
        'depends on the ranking: that is what `streamrec_recommended_slots_total{item="new"}` '
        "shows in production and `streamrec replay` measures offline (BENCHMARKS.md, replay).",
    ]
    return publish(path, "\n".join(lines) + "\n")


def main() -> None:
    """Parse the flags, run, write NEW_ITEMS.md and re-assemble BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a model directory (default: train a small one)")
    parser.add_argument("--new-items", type=int, default=30)
    parser.add_argument("--rate", type=float, default=50.0, help="background events/s")
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--gap-s", type=float, default=0.5, help="pause between new items")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="per new item")
    parser.add_argument("--out", default=str(HERE / "NEW_ITEMS.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="streamrec-new-items-") as tmp:
        report = run(args, Path(tmp))
    assembled = write_markdown(report, args, Path(args.out))
    print(Path(args.out).read_text())
    print(assembled)


if __name__ == "__main__":
    main()
