"""Training at catalog scale (issue 18): seconds per epoch and time to early stop vs catalog size.

Synthetic shop-shaped data (``shop_sequences``): Zipf-like item popularity inside categories,
users with a few favourite categories and a long-tailed number of events, and a sequential habit
(the next event is often the "next" item of the last one's category), so there is something to
learn and a popularity-only model is beaten. Each measurement runs in its own process (peak RSS
is that process's), one at a time:

* ``curve``: one epoch (training only, no validation) per loss and catalog size;
* ``threads``: one epoch at 25,000 items with 1 and 2 threads;
* ``old``: one epoch at 25,000 items as before issue 18 (full softmax, every user validated);
* ``stop``: 30,000 users x 25,000 items x 300,000 events trained to early stop (holdout 2),
  batch 64 and 256;
* ``ml100k``: ML-100k leave-one-out per loss (test NDCG@10 with 100 negatives and the whole
  catalog), as ``make quality`` measures it.

Results: ``benchmarks/TRAINING.md`` (assembled into BENCHMARKS.md), ``benchmarks/train_bench.json``
(raw rows) and ``benchmarks/train_curve.png``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from assemble import assemble
from harness import HERE, ML100K_ARG, machine, run_lines, say

SIZES = ((1_682, 943, 100_000), (5_000, 30_000, 300_000), (25_000, 30_000, 300_000))
BIG = ((100_000, 30_000, 300_000), (1_000_000, 30_000, 300_000))


def shop_sequences(users: int, items: int, events: int, seed: int = 0) -> dict[str, list[str]]:
    """Per-user item sequences of a synthetic shop (vectorised: 1M items in seconds)."""
    rng = np.random.default_rng(seed)
    categories = max(1, items // 250)
    cat_of_rank = rng.permutation(items) % categories  # item -> category
    members = [np.flatnonzero(cat_of_rank == c) for c in range(categories)]
    cdfs = []
    for m in members:
        w = 1.0 / np.arange(1, len(m) + 1) ** 1.0  # Zipf inside the category
        cdfs.append(np.cumsum(w) / w.sum())
    cat_weight = 1.0 / np.arange(1, categories + 1) ** 0.7  # popular categories too
    cat_weight /= cat_weight.sum()
    # events per user: long-tailed, at least 2, summing to about ``events``
    raw = rng.pareto(1.5, users) + 1.0
    lengths = np.maximum(2, np.round(raw / raw.sum() * events)).astype(int)
    favourite = rng.choice(categories, size=(users, 3), p=cat_weight)
    out: dict[str, list[str]] = {}
    for u in range(users):
        n = int(lengths[u])
        cats = favourite[u, rng.integers(0, 3, n)]
        draws = rng.random(n)
        follow = rng.random(n) < 0.5
        seq = np.empty(n, dtype=np.int64)
        for t in range(n):
            c = cats[t]
            if t and follow[t]:  # the "next" item after the last one, in its category
                last = seq[t - 1]
                m = members[cat_of_rank[last]]
                pos = int(np.searchsorted(m, last))
                seq[t] = m[(pos + 1) % len(m)]
            else:
                seq[t] = members[c][
                    min(int(np.searchsorted(cdfs[c], draws[t])), len(members[c]) - 1)
                ]
        out[f"u{u}"] = [f"i{i}" for i in seq]
    return out


def _sequences(data: str) -> tuple[dict[str, list[str]], list[str]]:
    """(sequences, the catalog's item ids): ``shop:ITEMSxUSERSxEVENTS`` or a data file."""
    from streamrec.training.data import read_sequences

    if data.startswith("shop:"):
        items, users, events = (int(x) for x in data[5:].split("x"))
        return shop_sequences(users, items, events), [f"i{i}" for i in range(items)]
    return read_sequences(data), []


def _one(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in this process; returns its row."""
    from streamrec.training.evaluate import build_cases, evaluate_scorer
    from streamrec.training.train import TrainConfig, _torch_scorer, train

    start = time.perf_counter()
    sequences, catalog = _sequences(spec["data"])
    prepared = time.perf_counter() - start
    config = TrainConfig(progress=False, **spec["config"])
    result = train(sequences, config, catalog)
    row: dict[str, Any] = {
        **spec,
        "users": len(sequences),
        "items": len(result.item_ids),
        "events": sum(len(s) for s in sequences.values()),
        "data_s": round(prepared, 1),
        "train_s": round(result.seconds, 1),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "epoch_s": [round(h["seconds"], 2) for h in result.history],
        "loss": result.loss.kind,
        "negatives": result.loss.negatives,
        "valid": result.valid or {k: v for k, v in result.history[-1].items() if "@" in k},
    }
    if spec.get("test"):
        index = {item: i + 1 for i, item in enumerate(result.item_ids)}
        scorer = _torch_scorer(result.model, index, config.max_len)
        for name, negatives in (("test_100", 100), ("test_all", None)):
            cases = build_cases(sequences, 1, negatives, config.seed, result.item_ids)
            metrics = evaluate_scorer(scorer, cases)
            row[name] = {k: round(v, 4) for k, v in metrics.items() if k in ("hr@10", "ndcg@10")}
    row["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    row["load_after"] = round(os.getloadavg()[0], 2)
    return row


def _spawn(spec: dict[str, Any]) -> dict[str, Any]:
    say(f"run {json.dumps(spec)}")
    out = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    say(f"  -> {row['train_s']} s, epochs {row['epoch_s']}, rss {row['peak_rss_mib']} MiB")
    return row


def _plan(parts: set[str], data: str, threads: int) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = []
    epoch = {"holdout": 0, "epochs": 1, "threads": threads}
    if "curve" in parts:
        for items, users, events in SIZES + BIG:
            losses = ("full", "sampled") if items <= 25_000 else ("sampled",)
            for loss in losses:
                specs.append(
                    {
                        "part": "curve",
                        "data": f"shop:{items}x{users}x{events}",
                        "config": {**epoch, "loss": loss},
                    }
                )
    shop25 = "shop:25000x30000x300000"
    if "threads" in parts:
        for t in (1, 2):
            specs.append({"part": "threads", "data": shop25, "config": {**epoch, "threads": t}})
    if "old" in parts:  # before issue 18: full softmax, every user validated each epoch
        old = {"holdout": 2, "epochs": 1, "loss": "full", "valid_users": 10**9}
        specs.append({"part": "old", "data": shop25, "config": {**old, "threads": threads}})
    if "stop" in parts:
        for batch in (64, 256):
            specs.append(
                {
                    "part": "stop",
                    "data": shop25,
                    "config": {"holdout": 2, "threads": threads, "batch_size": batch},
                    "test": True,
                }
            )
    if "ml100k" in parts:
        for loss in ("full", "sampled"):
            specs.append(
                {
                    "part": "ml100k",
                    "data": data,
                    "config": {"holdout": 2, "threads": threads, "loss": loss},
                    "test": True,
                }
            )
    return specs


@click.command()
@click.option("--data", default=ML100K_ARG, show_default=True, help="ML-100k u.data")
@click.option(
    "--parts",
    default="curve,threads,old,stop,ml100k",
    show_default=True,
    help="comma-separated: curve, threads, old, stop, ml100k",
)
@click.option("--threads", default=1, show_default=True, type=int)
@click.option("--rows", "rows_file", default=str(HERE / "train_bench.json"), show_default=True)
@click.option("--one", default=None, hidden=True, help="run one spec (JSON) and print its row")
def main(data: str, parts: str, threads: int, rows_file: str, one: str | None) -> None:
    """Measure training cost against catalog size and write benchmarks/TRAINING.md."""
    if one is not None:
        print(json.dumps(_one(json.loads(one))))
        return
    info = machine()
    path = Path(rows_file)
    rows: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    wanted = set(parts.split(","))
    done = [r for r in rows if r["part"] not in wanted]
    for spec in _plan(wanted, data, threads):
        done.append(_spawn(spec))
        path.write_text(json.dumps(done, indent=1) + "\n")
    from train_report import report

    (HERE / "TRAINING.md").write_text(report(done, run_lines(info, "python")))
    assemble()


if __name__ == "__main__":
    main()
