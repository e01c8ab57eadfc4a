"""Model quality on MovieLens-100k (issue 4): SASRec-CE vs popularity and co-occurrence.

For each seed: ``train --holdout 2`` (early stopping on validation NDCG@10), then evaluate the
model and both baselines on the test split against 100 sampled negatives and against the full
catalogue. Writes ``benchmarks/QUALITY.md`` and ``benchmarks/quality_valid_ndcg.png``.

Usage::

    python benchmarks/quality.py [DATA] [--seeds 0,1,2] [--threads 1] [--rows ROWS.json]

Equivalent CLI commands are listed in the report. Hyper-parameters are the library defaults,
chosen on the validation split; the test split is only read here.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import click
from harness import HERE, ML100K, cpu_model, md_row, publish, table_head

SCORERS = ("model", "popular", "cooc")
# Hand-run tuning on the validation split (seed 0, 1 thread, ``train(..., holdout=2)``); the
# test split was not looked at. Kept here so the report says how the defaults were chosen.
TUNING = [
    "lr 1e-3, batch 128, dropout 0.3, wd 0.1: slow (valid NDCG@10 0.37 after 8 epochs; "
    "stopped by hand)",
    "lr 3e-3, batch 64, dropout 0.3, wd 0.1: best valid NDCG@10 0.493 at epoch 47 "
    "(stopped by hand at 55)",
    "same, dropout 0.5: best 0.475 at epoch 34",
    "same, dropout 0.2: best 0.485 at epoch 25",
    "same, dropout 0.3, wd 0.5: best 0.493 at epoch 34 (HR@10 0.782) -> **defaults** (as good "
    "as wd 0.1 and stops earlier)",
]


def _run_seed(data: Path, seed: int, threads: int, work: Path) -> dict[str, Any]:
    from streamrec.ranking.modelfiles import read_model_dir
    from streamrec.training.evaluate import evaluate_file
    from streamrec.training.train import TrainConfig, train_file

    out = work / f"seed{seed}"
    started = time.perf_counter()
    summary = train_file(data, out, TrainConfig(holdout=2, seed=seed, threads=threads))
    wall = time.perf_counter() - started
    meta = read_model_dir(out).meta
    row: dict[str, Any] = {
        "seed": seed,
        "train_seconds": summary["train_seconds"],
        "wall_seconds": round(wall, 1),
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "valid": summary["valid"],
        "curve": [point["ndcg@10"] for point in meta.extra["curve"]],
    }
    for scorer in SCORERS:
        for negatives in (100, None):
            result = evaluate_file(str(data), "test", negatives, seed, scorer, str(out))
            key = f"{scorer}/{'100' if negatives else 'all'}"
            row[key] = {k: result[k] for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr")}
            click.echo(f"seed {seed} {key}: {json.dumps(row[key])}", err=True)
    return row


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        ax.plot(range(1, len(row["curve"]) + 1), row["curve"], label=f"seed {row['seed']}")
        ax.axvline(row["best_epoch"], linestyle=":", linewidth=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10 (100 negatives)")
    ax.set_title("ML-100k, SASRec-CE, --holdout 2")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mean(rows: list[dict[str, Any]], key: str, metric: str) -> str:
    values = [row[key][metric] for row in rows]
    spread = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def _report(rows: list[dict[str, Any]], data: Path, threads: int) -> str:
    import onnxruntime
    import torch

    from streamrec.training.train import TrainConfig

    seeds = ",".join(str(r["seed"]) for r in rows)
    mean_model = {m: statistics.mean(r["model/100"][m] for r in rows) for m in ("hr@10", "ndcg@10")}
    passed = mean_model["ndcg@10"] >= 0.44 and mean_model["hr@10"] >= 0.72
    longest = max(r["train_seconds"] for r in rows)
    lines = [
        "## Model quality (issue 4)",
        "",
        f"Data: MovieLens-100k `{data.name}` (943 users, 1,682 items, 100,000 ratings; every "
        "rating is an interaction; events ordered by timestamp, ties by file order). "
        "Leave-one-out: train on all but each user's last two events, early-stop on the "
        "second-last (validation NDCG@10, 100 negatives), report the last (test). "
        "Ranking: 100 negatives sampled uniformly from items the user never interacted with "
        "(same draw for every scorer, seeded by the seed), or the full catalogue minus the "
        "user's other history items. Ties: expected rank under a random tie-break. (The data "
        "set's README breaks timestamp ties by item id; the issue asks for file order, which "
        "is what the reader does.)",
        "",
        f"**Bar** (mean over seeds, test, 100 negatives): NDCG@10 >= 0.44 and HR@10 >= 0.72, "
        f"each training <= 15 min on 2 cores. **Result: {'met' if passed else 'NOT met'}** "
        f"(NDCG@10 {mean_model['ndcg@10']:.4f}, HR@10 {mean_model['hr@10']:.4f}, longest "
        f"training {longest / 60:.1f} min). Reference: pmixer/SASRec.pytorch HR@10 0.709, "
        "NDCG@10 0.419 on this protocol.",
    ]
    for negatives, title in (("100", "100 sampled negatives"), ("all", "full ranking")):
        lines += [
            "",
            f"### Test split, {title} (mean ± std over seeds)",
            "",
            *table_head(["scorer", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR"]),
        ]
        for scorer in SCORERS:
            key = f"{scorer}/{negatives}"
            cells = [_mean(rows, key, m) for m in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr")]
            lines.append(md_row([scorer, *cells]))
    lines += [
        "",
        "### Per seed (model)",
        "",
        *table_head(
            [
                "seed",
                "test HR@10",
                "test NDCG@10",
                "full HR@10",
                "full NDCG@10",
                "valid NDCG@10",
                "best epoch",
                "epochs run",
                "training s",
                "train+export s",
            ]
        ),
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['model/100']['hr@10']:.4f} | {r['model/100']['ndcg@10']:.4f} "
            f"| {r['model/all']['hr@10']:.4f} | {r['model/all']['ndcg@10']:.4f} "
            f"| {r['valid'].get('ndcg@10', float('nan')):.4f} | {r['best_epoch']} "
            f"| {r['epochs_run']} | {r['train_seconds']:.0f} | {r['wall_seconds']:.0f} |"
        )
    config = TrainConfig(holdout=2, threads=threads)
    cpu = cpu_model(platform.processor() or "unknown")
    lines += [
        "",
        "![validation NDCG@10 per epoch](quality_valid_ndcg.png)",
        "",
        "### Tuning (validation split only, seed 0)",
        "",
        *[f"- {line}" for line in TUNING],
        "",
        "Differences between these runs are about the size of the seed-to-seed spread, so the "
        "defaults are a reasonable choice rather than a sharp optimum.",
        "",
        "### How it was run",
        "",
        f"`python benchmarks/quality.py {data} --seeds {seeds} --threads {threads}`, which for "
        "each seed S runs the equivalent of:",
        "",
        "```",
        f"streamrec train --data {data} --out MODEL --holdout 2 --seed S --threads {threads}",
        f"streamrec evaluate --data {data} --model MODEL --split test --negatives 100 --seed S",
        f"streamrec evaluate --data {data} --model MODEL --split test --negatives all --seed S",
        f"streamrec evaluate --data {data} --baseline popular|cooc --split test "
        "--negatives 100|all --seed S",
        "```",
        "",
        f"Hyper-parameters (library defaults): dim {config.dim}, max_len {config.max_len}, "
        f"{config.blocks} blocks, {config.heads} head(s), dropout {config.dropout}, AdamW lr "
        f"{config.lr}, weight decay {config.weight_decay}, batch {config.batch_size} users, "
        f"full-softmax cross-entropy, at most 100 epochs, patience {config.patience}.",
        "",
        f"Machine: {os.cpu_count()} CPUs (nproc), {cpu}, torch {torch.__version__} "
        f"({threads} threads), onnxruntime {onnxruntime.__version__}, Python "
        f"{platform.python_version()}. Other processes shared the CPUs, so times are upper "
        "bounds.",
        "",
    ]
    return "\n".join(lines)


@click.command()
@click.argument("data", default=str(ML100K), type=click.Path(exists=True, dir_okay=False))
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated seeds.")
@click.option("--threads", default=1, show_default=True, type=int)
@click.option("--out", default=str(HERE / "QUALITY.md"), show_default=True)
@click.option(
    "--rows",
    "rows_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Re-render the report and plot from the JSON a previous run printed (no training).",
)
def main(data: str, seeds: str, threads: int, out: str, rows_file: str | None) -> None:
    """Train and evaluate on ML-100k for each seed; print the raw rows as JSON on stdout.

    Writes the Markdown report and the validation plot.
    """
    path = Path(data)
    if rows_file is not None:
        rows = json.loads(Path(rows_file).read_text())
    else:
        rows = []
        with tempfile.TemporaryDirectory() as work:
            for seed in (int(s) for s in seeds.split(",")):
                rows.append(_run_seed(path, seed, threads, Path(work)))
        click.echo(json.dumps(rows))
    _plot(rows, HERE / "quality_valid_ndcg.png")
    publish(Path(out), _report(rows, path, threads))
    click.echo(f"wrote {out}", err=True)


if __name__ == "__main__":
    main()
