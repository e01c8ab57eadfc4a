"""Throughput and latency of the whole worker, and of each stage of the event path alone.

One run, one process, writes ``benchmarks/THROUGHPUT.md``:

(a) the whole ``Worker`` on the embedded broker:
    * drain: N events are produced *before* the worker starts, so the run measures how fast a
      backlog is drained (latencies then include queueing);
    * paced: events produced in real time (by a separate process, so that the producer does not
      compete with the worker for the GIL) at about half the drain throughput, for unqueued
      latency.
(b) each stage alone on the same events, in this process: poll (a plain consumer), decode,
    store (dedupe read + ``load_users`` + ``commit_batch`` + outbox delete, fresh database),
    encode (``OnnxEncoder.encode``), search (``ItemIndex.search``), rank + serialize, produce.

Usage::

    python benchmarks/throughput.py                      # trains a small model first (~1 min)
    python benchmarks/throughput.py --model /tmp/model --events 2000

This file is the entry point; ``throughput_worker.py`` runs the whole worker,
``throughput_stages.py`` times the stages alone, ``throughput_report.py`` writes the report and
``harness.py`` holds what every benchmark script shares.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from harness import (
    assigned_consumer,
    broker_settings,
    check_model_dir,
    machine,
    pct,
    say,
    train_simulated,
)
from throughput_report import write_report
from throughput_stages import stage_benchmarks
from throughput_worker import (
    RunResult,
    compute_latencies,
    input_timestamps,
    paced_run,
    read_back,
    run_worker,
)

from streamrec.core.events import Event
from streamrec.io.broker import EmbeddedBroker
from streamrec.io.simulate import SimConfig, Simulator
from streamrec.io.traffic import produce_catalog, produce_events
from streamrec.ops.settings import Settings
from streamrec.worker.serving import load_serving_model

TRAIN_EVENTS = 20_000


def ensure_model(model: Path | None, tmp: Path) -> Path:
    """Reuse ``model`` or train a small one on simulated traffic into ``tmp``."""
    if model is not None:
        return check_model_dir(model)
    from streamrec.training.train import TrainConfig

    note = f"training a small model on {TRAIN_EVENTS} simulated events (10 epochs) ..."
    model_dir, summary, seconds = train_simulated(
        tmp, TRAIN_EVENTS, TrainConfig(epochs=10, progress=False), note
    )
    say(f"model {summary['version']} trained in {seconds:.0f}s")
    return model_dir


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=5000, help="events of the drain run")
    p.add_argument("--model", type=Path, default=None, help="model dir (default: train one)")
    p.add_argument("--db-url", default=None, help="worker database (default: temp SQLite file)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/THROUGHPUT.md"))
    p.add_argument("--batch-max-events", type=int, default=None, help="default: Settings'")
    p.add_argument(
        "--ranking",
        choices=["encoder", "fused"],
        default="encoder",
        help="worker ranking; 'encoder' matches the encode/search stages timed alone",
    )
    p.add_argument("--paced-seconds", type=float, default=20.0, help="0 skips the paced run")
    p.add_argument(
        "--paced-fraction",
        type=float,
        nargs="+",
        default=[0.5, 0.2],
        help="paced runs, each at this fraction of the drain throughput",
    )
    p.add_argument("--timeout-s", type=float, default=120.0, help="per worker run")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run everything; return the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="streamrec-throughput-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = ensure_model(args.model, tmp)
        with broker_settings(
            tmp,
            model_dir,
            args.db_url or f"sqlite:///{tmp / 'worker.db'}",
            batch_max_events=args.batch_max_events,
            ranking=args.ranking,
            log_level="WARNING",
        ) as (broker, settings):
            return _benchmark(args, info, settings, broker, tmp)


def _benchmark(
    args: argparse.Namespace,
    info: dict[str, str],
    settings: Settings,
    broker: EmbeddedBroker,
    tmp: Path,
) -> int:
    sim = Simulator(SimConfig(seed=1))
    produce_catalog(broker.bootstrap, settings.items_topic, sim.catalog())
    model = load_serving_model(settings)
    events: list[Event] = list(sim.events(args.events))
    say(f"producing {len(events)} events before the worker starts ...")
    start = time.perf_counter()
    produce_events(broker.bootstrap, settings.events_topic, events)
    produce_s = time.perf_counter() - start
    records, poll_s = read_back(broker.bootstrap, settings.events_topic, len(events), 60)
    input_ts = input_timestamps(records)

    out_consumer = assigned_consumer(broker.bootstrap, settings.recs_topic)
    runs: list[RunResult] = []
    try:
        say(f"drain run: {len(events)} events ...")
        drain = run_worker(settings, model, out_consumer, set(input_ts), "drain", args.timeout_s)
        compute_latencies(drain, input_ts)
        runs.append(drain)
        say(f"drain: {drain.received} received, {drain.steady_rate:,.0f} events/s steady")
        if drain.error:
            say(f"drain run problem: {drain.error}")
        produced = len(events)
        for i, fraction in enumerate(args.paced_fraction if args.paced_seconds > 0 else []):
            if drain.steady_rate != drain.steady_rate:
                break
            rate = max(1.0, fraction * drain.steady_rate)
            paced = paced_run(
                settings, model, out_consumer, rate, args.paced_seconds, 30.0, seed=2 + i
            )
            paced.name = f"paced {100 * fraction:.0f} %"
            produced += paced.events
            # The paced events' timestamps are known once produced: read the whole topic back.
            everything, _ = read_back(broker.bootstrap, settings.events_topic, produced, 60)
            compute_latencies(paced, input_timestamps(everything))
            runs.append(paced)
            p50, p99 = pct(paced.lat_recv, 50), pct(paced.lat_recv, 99)
            say(f"{paced.name}: {paced.received} received; p50 {p50:.3f} s, p99 {p99:.3f} s")
    finally:
        out_consumer.close()
    stages = stage_benchmarks(settings, model, records, poll_s, tmp)
    text = write_report(args.out, args, info, settings, model, produce_s, runs, stages)
    print(text)
    say(f"wrote {args.out}")
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
