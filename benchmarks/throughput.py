"""Throughput, latency and cost curves of the worker on a large catalog (issue 13): ``make bench``.

The default settings (fused ranking, SQLite), a catalog loaded through the catalog topic
(``throughput_workload.py``: the model's items plus catalog items with vectors, skewed
traffic), one embedded broker and one live worker (``throughput_session.py``):

(1) drain events/s: the backlog is produced before the worker starts;
(2) paced p50/p99 at 50 % of the drain rate; latency = output record timestamp - input record
    timestamp;
(3) each stage alone on the same events (``throughput_stages.py``): decode, state transaction,
    encoder, ANN search, fusion/rank (the fused path), publish;
(4) the whole as a fraction of its slowest stage alone;
(5) a plain kafka-python consume -> decode -> produce loop on the same broker, the ceiling
    (``throughput_ceiling.py``);
and every event answered exactly once (the output topic read back), recall@10 of the HNSW
search against exact search (``throughput_recall.py``), cost curves against catalog size
(through the broker up to ``--broker-max-items``, in one process for every size:
``throughput_inprocess.py``) and history length, with a plot (``throughput_report.py``).

Usage::

    python benchmarks/throughput.py                                  # everything (~15-20 min)
    python benchmarks/throughput.py --items 10000 --events 2000 --parts main
    python benchmarks/throughput.py --parts inprocess-curve --curve-items 1000 1000000

Each part's results are kept in ``benchmarks/throughput.json``; the report is rewritten from
it, so a part run alone keeps the others' latest results (each with its own command and date).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import check_model_dir, machine, run_lines, say, train_simulated
from throughput_inprocess import inprocess_point
from throughput_report import write_report
from throughput_session import broker_session

TRAIN_EVENTS = 20_000
PARTS = ("main", "main-confluent", "broker-curve", "inprocess-curve")


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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = p.add_argument
    add("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to run")
    add("--report-only", action="store_true", help="rewrite the report from --json, run nothing")
    add("--model", type=Path, default=None, help="model dir (default: train one, ~15 s)")
    add("--items", type=int, default=100_000, help="catalog size of the main run")
    add("--events", type=int, default=6000, help="events of the main run's drain")
    add("--users", type=int, default=2000, help="users of the simulated traffic")
    add("--warmup-events", type=int, default=40_000, help="applied before the worker starts")
    add("--zipf-s", type=float, default=1.0, help="popularity exponent of the items")
    add("--paced-fraction", type=float, default=0.5, help="paced rate / drain rate")
    add("--paced-seconds", type=float, default=20.0, help="main run's paced phase; 0 skips it")
    add("--history", type=int, nargs="*", default=[1, 10, 50], help="history lengths")
    add("--history-users", type=int, default=1000, help="events of a history burst (and paced)")
    add("--history-paced-seconds", type=float, default=10.0)
    add("--curve-items", type=int, nargs="*", default=[1000, 10_000, 100_000, 1_000_000])
    add("--broker-max-items", type=int, default=100_000, help="larger: in-process only")
    add("--curve-events", type=int, default=2000, help="drain events per curve point")
    add("--curve-paced-seconds", type=float, default=10.0)
    add("--recall-queries", type=int, default=1000)
    add("--no-recall-sweep", dest="recall_sweep", action="store_false")
    add("--timeout-s", type=float, default=120.0, help="slack per phase")
    add("--out", type=Path, default=Path("benchmarks/THROUGHPUT.md"))
    add("--json", type=Path, default=Path("benchmarks/throughput.json"))
    add("--plot", type=Path, default=Path("benchmarks/throughput_curves.png"))
    return p.parse_args(argv)


def _meta(info: dict[str, str]) -> dict[str, Any]:
    return {"lines": run_lines(info, Path(sys.executable).name)}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the parts asked for, keep their results, rewrite the report; the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # kafka-python logs closing clients' cancelled metadata requests at ERROR: noise here
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    results: dict[str, Any] = json.loads(args.json.read_text()) if args.json.is_file() else {}
    info = machine()
    if args.report_only:
        args.parts = []
    with tempfile.TemporaryDirectory(prefix="streamrec-throughput-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = ensure_model(args.model, tmp) if args.parts else Path()
        if "main" in args.parts:
            results["main"] = {
                **_meta(info),
                **broker_session(args, model_dir, args.items, tmp / "main", True),
            }
            _save(args, results)
        if "main-confluent" in args.parts:  # the same run, the optional native output client
            results["main_confluent"] = {
                **_meta(info),
                **broker_session(
                    args, model_dir, args.items, tmp / "mainc", True, "confluent-kafka"
                ),
            }
            _save(args, results)
        if "broker-curve" in args.parts:
            curve = {**_meta(info), "points": {}}
            for n in args.curve_items:
                if n <= args.broker_max_items and n != results.get("main", {}).get("items"):
                    curve["points"][str(n)] = broker_session(
                        args, model_dir, n, tmp / f"b{n}", False
                    )
                    _save(args, {**results, "broker_curve": curve})
            results["broker_curve"] = curve
        if "inprocess-curve" in args.parts:
            results["inprocess_curve"] = {**_meta(info), "points": _inprocess(args, model_dir, tmp)}
            _save(args, results)
    text = write_report(args, results)
    print(text)
    say(f"wrote {args.out}, {args.plot} and {args.json}")
    return 1 if _problems(results) else 0


def _inprocess(args: argparse.Namespace, model_dir: Path, tmp: Path) -> dict[str, Any]:
    from streamrec.ops.settings import load_settings
    from streamrec.ranking.encoder import OnnxEncoder
    from streamrec.ranking.modelfiles import read_model_dir

    settings = load_settings(model_dir=model_dir, metrics_port=0)
    files = read_model_dir(model_dir)
    encoder = OnnxEncoder(
        files.encoder_path(), files.meta.dim, files.meta.max_len, settings.encoder_threads
    )
    return {
        str(n): inprocess_point(settings, files, encoder, n, args, tmp, n == args.items)
        for n in args.curve_items
    }


def _save(args: argparse.Namespace, results: dict[str, Any]) -> None:
    args.json.write_text(json.dumps(results, indent=1, default=float) + "\n")


def _problems(results: dict[str, Any]) -> list[str]:
    out = []
    for key in ("main", "main_confluent"):
        run = results.get(key, {})
        if run and not run.get("exactly_once", {}).get("ok", False):
            out.append(f"{key}: output not exactly once")
    main = results.get("main", {})
    sessions = [main, *results.get("broker_curve", {}).get("points", {}).values()]
    for session in sessions:
        out += [p["error"] for p in session.get("phases", []) if p.get("error")]
    return out


if __name__ == "__main__":
    sys.exit(main())
