"""TRAINING.md from the rows of ``train_bench.py`` (and its plot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import HERE


def _rows(rows: list[dict[str, Any]], part: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["part"] == part]


def _epoch(r: dict[str, Any]) -> float:
    return float(r["epoch_s"][0]) if r["epoch_s"] else float("nan")


def _plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for loss, marker in (("full", "o"), ("sampled", "s")):
        pts = sorted((r["items"], _epoch(r)) for r in _rows(rows, "curve") if r["loss"] == loss)
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=marker, label=f"{loss} softmax")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalog items")
    ax.set_ylabel("seconds per epoch (300,000 events)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _quality(r: dict[str, Any]) -> str:
    t100, tall = r.get("test_100", {}), r.get("test_all", {})
    return (
        f"{t100.get('ndcg@10', float('nan')):.4f} | {t100.get('hr@10', float('nan')):.4f} | "
        f"{tall.get('ndcg@10', float('nan')):.4f} | {tall.get('hr@10', float('nan')):.4f}"
    )


def _summary(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets against this run's rows (where the rows exist)."""
    out = ["## Against the targets", ""]
    old = _rows(rows, "old")
    stop = [r for r in _rows(rows, "stop") if r["config"].get("batch_size", 64) == 64]
    if old and stop:
        per_epoch = old[0]["train_s"]
        new = stop[0]["train_s"]
        epochs = stop[0]["best_epoch"] + 15
        out.append(
            f"- 25,000 items, 300,000 events, to early stop: **{new / 60:.1f} min** (target 10). "
            f"Before: {per_epoch:.0f} s per epoch with its validation, so at least 16 epochs "
            f"(patience 15) = {16 * per_epoch / 60:.0f} min, {16 * per_epoch / new:.1f}x this; "
            f"had it also peaked at epoch {stop[0]['best_epoch']} it would have run {epochs} "
            f"epochs = {epochs * per_epoch / 60:.0f} min ({epochs * per_epoch / new:.0f}x)."
        )
    big = [r for r in _rows(rows, "curve") if r["items"] >= 1_000_000]
    if big:
        r = big[0]
        out.append(
            f"- 1,000,000 items: one epoch over {r['events']:,} events **{_epoch(r):.0f} s** "
            f"(target 300 s), peak RSS {r['peak_rss_mib']:,} MiB."
        )
    ml = {r["loss"]: r for r in _rows(rows, "ml100k")}
    if ml:
        parts = [
            f"{loss}: NDCG@10 {r.get('test_100', {}).get('ndcg@10', float('nan')):.4f} "
            f"(100 negatives), {r.get('test_all', {}).get('ndcg@10', float('nan')):.4f} (all)"
            for loss, r in sorted(ml.items())
        ]
        out.append(
            "- ML-100k, seed 0 (bars: 0.457 with 100 negatives, 0.106 full ranking, the means of"
            " `make quality`): " + "; ".join(parts) + ". `auto` uses the full softmax there."
        )
    return [*out, ""] if len(out) > 2 else []


def report(rows: list[dict[str, Any]], run: list[str]) -> str:
    """The section's markdown."""
    lines = ["# Training at catalog scale (issue 18)", "", *run, ""]
    lines += [
        "Each row is one process (peak RSS is its own); `--parts` re-runs only those parts and"
        " keeps the other rows of `benchmarks/train_bench.json` (here: curve, threads, old and"
        " stop from `--parts curve,old,stop,ml100k,threads` started 11:34 UTC, ml100k from the"
        " run above). Synthetic data: `shop:ITEMSxUSERSxEVENTS`"
        " from `shop_sequences` (Zipf popularity inside categories, long-tailed users, a"
        " sequential habit); the catalog's items all get a table row even when no event"
        " names them. Defaults: dim 64, max_len 200, 2 blocks, batch 64, AdamW 3e-3,"
        " `loss=auto` (full softmax up to 10,000 items, above it a sampled softmax with 1,024"
        " uniform negatives shared by the batch).",
        "",
    ]
    lines += _summary(rows)
    curve = _rows(rows, "curve")
    if curve:
        lines += [
            "## Seconds per epoch against catalog size (training only, one epoch)",
            "",
            "| items | users | events | loss | negatives | s / epoch | peak RSS MiB |",
            "|---:|---:|---:|---|---:|---:|---:|",
        ]
        for r in sorted(curve, key=lambda r: (r["items"], r["loss"])):
            lines.append(
                f"| {r['items']:,} | {r['users']:,} | {r['events']:,} | {r['loss']} "
                f"| {r['negatives']:,} | {_epoch(r):.1f} | {r['peak_rss_mib']:,} |"
            )
        if _plot(rows, HERE / "train_curve.png"):
            lines += ["", "![seconds per epoch vs catalog size](benchmarks/train_curve.png)"]
        lines.append("")
    got = _rows(rows, "threads")
    if got:
        lines += [
            "## torch threads (25,000 items, sampled, one epoch)",
            "",
            "| threads | s / epoch | load average after |",
            "|---:|---:|---:|",
        ]
        for r in got:
            lines.append(f"| {r['config']['threads']} | {_epoch(r):.1f} | {r['load_after']} |")
        lines.append("")
    for r in _rows(rows, "old"):
        valid = r["train_s"] - _epoch(r)
        lines += [
            "## Before issue 18 (25,000 items: full softmax, every user validated each epoch)",
            "",
            f"One epoch {_epoch(r):.0f} s of training plus {valid:.0f} s validating all "
            f"{r['users']:,} users (peak RSS {r['peak_rss_mib']:,} MiB). With patience 15 a run"
            f" lasts at least 16 epochs: at least {16 * r['train_s'] / 60:.0f} min, a lower bound"
            " (the run reported in the issue had not finished after 35 min).",
            "",
        ]
    for part, title in (
        ("stop", "25,000 items, 30,000 users, 300,000 events: trained to early stop"),
        ("ml100k", "ML-100k quality per loss (test split, the protocol of `make quality`)"),
    ):
        got = _rows(rows, part)
        if got:
            lines += [
                f"## {title}",
                "",
                "| loss | negatives | batch | epochs (best) | training s | mean s / epoch "
                "| NDCG@10 (100 neg.) | HR@10 (100 neg.) | NDCG@10 (all) | HR@10 (all) "
                "| peak RSS MiB |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for r in got:
                mean = sum(r["epoch_s"]) / max(1, len(r["epoch_s"]))
                lines.append(
                    f"| {r['loss']} | {r['negatives']:,} | {r['config'].get('batch_size', 64)} "
                    f"| {r['epochs_run']} ({r['best_epoch']}) "
                    f"| {r['train_s']:.0f} | {mean:.1f} | {_quality(r)} | {r['peak_rss_mib']:,} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"
