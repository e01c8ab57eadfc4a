"""Streaming replay of ML-100k through the worker pipeline; writes benchmarks/REPLAY.md.

    .venv/bin/python benchmarks/replay.py [--data ../shared/datasets/ml-100k/u.data]

Trains the encoder on the first 80% of the events by time (unless --model already holds such a
model), replays the rest test-then-train for every ablation row of
``streamrec.replay_cli.ablation_configs`` and writes ``REPLAY.md``, ``replay.json`` and
``replay_segments.png`` next to this script. The rows derive from the worker's default settings,
which ``benchmarks/tune.py`` chose on an earlier validation window (never on this one).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from harness import HERE, data_option, epochs_option, publish, table_head, train_warmup_model

from streamrec.evaluation.cli import (
    COVISIT_ONLY,
    ENC_TREND,
    ENC_TREND_NEW,
    ENCODER_ONLY,
    FUSED,
    FUSED_EXPLORE,
    FUSED_NO_NEW,
    TRENDING_ONLY,
    ablation_configs,
    bar_checks,
    markdown_table,
)

SEGMENTS = ["overall", "history=0", "history=1-4", "history=5-19", "history=20+", "item=seen"]
SEGMENTS.append("item=new")


def plot(rows: dict, path: Path) -> None:
    """One panel per segment: NDCG@10 of every row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SEGMENTS), figsize=(3.2 * len(SEGMENTS), 4.2), sharey=False)
    names = list(rows)
    colors = plt.get_cmap("tab10")(range(len(names)))
    for ax, seg in zip(axes, SEGMENTS, strict=True):
        values = [
            (rows[n]["overall"] if seg == "overall" else rows[n]["segments"][seg])["ndcg@10"]
            for n in names
        ]
        ax.bar(range(len(names)), values, color=colors)
        n = rows[names[0]]["overall" if seg == "overall" else "segments"]
        count = n["n"] if seg == "overall" else n[seg]["n"]
        ax.set_title(f"{seg}\n({count} events)", fontsize=9)
        ax.set_xticks([])
        ax.tick_params(labelsize=8)
    axes[0].set_ylabel("NDCG@10")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors]
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reading_notes(rows: dict, tuning: dict | None) -> list[str]:
    """What the table says, computed from it (so a re-run never leaves stale prose)."""

    def nd(name: str, seg: str | None = None) -> float:
        row = rows[name]
        return float((row["segments"][seg] if seg else row["overall"])["ndcg@10"])

    singles = (ENCODER_ONLY, TRENDING_ONLY, COVISIT_ONLY)
    best = max(singles, key=nd)
    notes = []
    if tuning:
        chosen = ", ".join(f"`{k}` {v}" for k, v in tuning["chosen_settings"].items())
        notes.append(
            f"- **Defaults** come from `benchmarks/tune.py` (TUNING section): chosen on a "
            f"validation window ({tuning['train_fraction']:.0%}-{tuning['valid_end']:.0%} of the "
            f"log by time, its own model trained on the first {tuning['train_fraction']:.0%}) by "
            f"rules fixed before the runs; this test window was not read. Chosen: {chosen}."
        )
    notes.append(
        f"- **Fusion**: the best single source is {best} ({nd(best):.4f} overall); the fused "
        f"list scores {nd(FUSED):.4f} ({nd(FUSED) - nd(best):+.4f})."
    )
    for seg in SEGMENTS[1:]:
        beaten = [s for s in singles if nd(s, seg) > nd(FUSED, seg)]
        if beaten:
            notes.append(
                f"  In `{seg}` the fused list ({nd(FUSED, seg):.4f}) is below "
                + ", ".join(f"{s} ({nd(s, seg):.4f})" for s in beaten)
                + "."
            )
    h0 = "history=0"
    notes.append(
        f"- **New users** (`{h0}`, {rows[FUSED]['segments'][h0]['n']} events): the fused list "
        f"scores {nd(FUSED, h0):.4f} against {nd(TRENDING_ONLY, h0):.4f} for trending alone: "
        "without history the encoder and co-visitation weigh 0, so the list is the trending list."
    )
    notes.append(
        f"- **New-item vectors**: the new-item segment ({rows[FUSED]['segments']['item=new']['n']}"
        f" events) goes from {nd(ENC_TREND, 'item=new'):.4f} to "
        f"{nd(ENC_TREND_NEW, 'item=new'):.4f} in the encoder + trending rows, overall "
        f"{nd(ENC_TREND):.4f} -> {nd(ENC_TREND_NEW):.4f}; in the fused system "
        f"{nd(FUSED_NO_NEW, 'item=new'):.4f} -> {nd(FUSED, 'item=new'):.4f} on new items, "
        f"overall {nd(FUSED_NO_NEW):.4f} -> {nd(FUSED):.4f}."
    )
    on, off = rows[FUSED_EXPLORE], rows[FUSED]
    cost = 1.0 - on["overall"]["hr@10"] / off["overall"]["hr@10"]
    notes.append(
        f"- **Exploration** ({on['config']['explore_from']} pool, rate "
        f"{on['config']['explore_rate']}): coverage {off['coverage']:.3f} -> {on['coverage']:.3f}"
        f" (x{on['coverage'] / off['coverage']:.2f}), popularity bias "
        f"{off['popularity_bias']:.3f} -> {on['popularity_bias']:.3f}, HR@10 "
        f"{off['overall']['hr@10']:.4f} -> {on['overall']['hr@10']:.4f} ({cost:.1%} relative)."
    )
    return notes


def write_markdown(report: dict, path: Path) -> None:
    """REPLAY.md from the report; re-assembles BENCHMARKS.md."""
    rows = report["rows"]
    lines = [
        "# Streaming replay (ML-100k)",
        "",
        "Written by `benchmarks/replay.py` (`streamrec replay` prints the same table).",
        "",
        f"- Data: `{report['data']}`; {report['warmup_events']} warm-up events (first "
        f"{report['warmup_fraction']:.0%} by time) train the model `{report['model_version']}` "
        f"and warm the state; {report['replayed_events']} events are replayed test-then-train "
        f"through `Pipeline.process` in user-disjoint batches of {report['batch_size']}.",
        "- Every MovieLens rating is a `click` (no purchases in ML-100k).",
        f"- Model training: {report['train_note']}. Replay wall time, all rows: "
        f"{report['replay_seconds']:.0f} s on this machine (2 shared cores).",
        "- Metrics: HR@10 / NDCG@10 / MRR of the event's item in the list that was current for "
        "the user before the event; coverage = distinct items in all produced lists / items in "
        "model or log; pop. bias = share of slots from the top 10% most frequent training items; "
        "explored = share of explored slots.",
        "- Each row replays with a fresh index and ranker and is deterministic within a "
        "process (exploration is seeded per event); hnswlib builds its graph with several threads, "
        "so a re-run can differ in the last digit.",
        "",
        markdown_table(rows),
        "",
        "![NDCG@10 per segment](replay_segments.png)",
        "",
        "## Bars of issue 7",
        "",
        *table_head(["bar", "value", "bound", "result"]),
    ]
    for check in report["bars"]:
        verdict = "pass" if check["pass"] else "**FAIL**"
        lines.append(
            f"| {check['bar']} | {check['value']} | {check['op']} {check['bound']} | {verdict} |"
        )
    lines += [
        "",
        "Per-row wall time (s): " + ", ".join(f"{n} {r['seconds']}" for n, r in rows.items()),
    ]
    lines += ["", "New items recommended (distinct) per row: "]
    lines[-1] += ", ".join(f"{n} {r['new_items_recommended']}" for n, r in rows.items())
    lines += ["", "## Reading the numbers", "", *reading_notes(rows, report.get("tuning"))]
    publish(path, "\n".join(lines) + "\n")


@click.command()
@data_option
@click.option("--model", default="/tmp/replay-ml100k/model", show_default=True)
@click.option("--fraction", default=0.8, show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@epochs_option
def main(data: str, model: str, fraction: float, batch_size: int, epochs: int) -> None:
    """Run every ablation row and write REPLAY.md, replay.json and the plot."""
    from streamrec.evaluation.replay import ReplayData, check_no_leakage, load_log, replay_config
    from streamrec.ops.settings import load_settings
    from streamrec.ranking.encoder import OnnxEncoder
    from streamrec.ranking.modelfiles import read_model_dir
    from streamrec.ranking.ranker import RankingConfig

    events = load_log(data)
    model_dir = Path(model)
    train_note = f"reused `{model_dir}`"
    trained_s = train_warmup_model(data, model_dir, fraction, epochs, events)
    if trained_s is not None:
        train_note = f"{epochs} epochs, max_len 50, {trained_s:.0f} s"
    files = read_model_dir(model_dir)
    facts = files.meta.extra
    if "train_seconds" in facts:
        cfg = facts.get("train_config", {})
        train_note += (
            f" (trained {facts.get('epochs_run')} epochs, dim {cfg.get('dim')}, max_len "
            f"{cfg.get('max_len')}, {facts['train_seconds']:.0f} s)"
        )
    replay_data = ReplayData.build(events, files, fraction)
    check_no_leakage(files, replay_data.warmup)
    encoder = OnnxEncoder(files.encoder_path(), files.meta.dim, files.meta.max_len, 1)
    started = time.perf_counter()
    settings = load_settings()
    rows = {
        name: replay_config(replay_data, encoder, config, name, batch_size, settings=settings)
        for name, config in ablation_configs(RankingConfig.from_settings(settings)).items()
    }
    report = {
        "data": data,
        "model_version": files.meta.version,
        "warmup_fraction": fraction,
        "warmup_events": len(replay_data.warmup),
        "replayed_events": len(replay_data.test),
        "batch_size": batch_size,
        "train_note": train_note,
        "replay_seconds": time.perf_counter() - started,
        "rows": rows,
        "bars": bar_checks(rows),
        "tuning": _tuning(),
    }
    (HERE / "replay.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    plot(rows, HERE / "replay_segments.png")
    write_markdown(report, HERE / "REPLAY.md")
    click.echo(markdown_table(rows))
    for check in report["bars"]:
        click.echo(f"{'PASS' if check['pass'] else 'FAIL'} {check['bar']}: {check['value']}")


def _tuning() -> dict | None:
    """The chosen defaults and windows of benchmarks/tune.py, when it has run."""
    path = HERE / "tune.json"
    if not path.is_file():
        return None
    tune = json.loads(path.read_text())
    return {k: tune[k] for k in ("train_fraction", "valid_end", "chosen_settings")}


if __name__ == "__main__":
    main()
