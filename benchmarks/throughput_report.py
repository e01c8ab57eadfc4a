"""The report of ``throughput.py``: ``THROUGHPUT.md`` (or ``--out``) from its runs and stages.

Not a script: ``throughput.py`` imports it (this folder is on ``sys.path`` then).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from harness import (
    PARTITIONS,
    fmt,
    histogram_quantile,
    md_row,
    ms,
    pct,
    publish,
    run_lines,
    sample_sums,
    table_head,
)
from throughput_stages import StageResult
from throughput_worker import RunResult

from streamrec.ops.settings import Settings
from streamrec.worker.serving import ServingModel


def worker_run_rows(run: RunResult) -> list[str]:
    """Table rows of one worker run."""
    claimed = run.t_claimed - run.t_start
    batches, mean = run.batches()
    return [
        f"| {run.name} | {run.received:,}/{run.events:,} | {fmt(batches)} ({fmt(mean)}) | "
        f"{fmt(run.steady_rate)} | "
        f"{fmt(run.rate_since(run.t_start))} | {fmt(run.rate_since(run.t_claimed))} | "
        f"{fmt(claimed, 1)} | {fmt(run.t_first - run.t_start, 1)} | "
        f"{fmt(run.rate_target) if run.rate_target else '—'} |"
    ]


def latency_rows(run: RunResult) -> list[str]:
    """Latency rows of one worker run, exact from records and bucketed from the histogram."""
    rows = []
    for label, values in (
        ("input ts → `generated_at` (after search, before DB commit)", run.lat_gen),
        ("input ts → output record ts (producer send, after DB commit)", run.lat_send),
        ("input ts → received by the benchmark's consumer", run.lat_recv),
    ):
        rows.append(
            f"| {run.name} | {label} | {len(values):,} | {ms(pct(values, 50))} | "
            f"{ms(pct(values, 99))} | {ms(max(values) if values else float('nan'))} |"
        )
    if run.metrics is not None:
        hist = run.metrics.event_to_rec_seconds
        count = sample_sums(hist, "_count").get("", 0.0)
        p50 = histogram_quantile(hist, 0.5)
        p99 = histogram_quantile(hist, 0.99)
        rows.append(
            f"| {run.name} | worker histogram `streamrec_event_to_recommendation_seconds` "
            f"(input ts → broker ack; bucket bounds) | {count:,.0f} | "
            f"{ms(p50[0])} to {ms(p50[1])} | {ms(p99[0])} to {ms(p99[1])} | — |"
        )
    return rows


def worker_stage_table(runs: Sequence[RunResult]) -> list[str]:
    """Where each run's time went, from the worker's stage histograms: ms/batch and µs/event."""
    cols = []
    for run in runs:
        if run.metrics is None:
            continue
        sums = sample_sums(run.metrics.stage_seconds, "_sum", "stage")
        batches = sample_sums(run.metrics.batch_size, "_count").get("", 0.0)
        records = sample_sums(run.metrics.batch_size, "_sum").get("", 0.0)
        wall = run.t_last - run.t_claimed
        sums["untimed"] = wall - sum(sums.values())
        sums["wall"] = wall
        cols.append((run.name, sums, batches, records))
    heads = [h for name, *_ in cols for h in (f"{name}: ms/batch", "µs/event", "share")]
    lines = table_head(["stage", *heads], "l" + "rrr" * len(cols))
    labels = {
        "untimed": "untimed: poll, Record copies, serialize, Kafka commit, catalog poll, "
        "idle (paced), benchmark consumer (GIL)",
        "rank": "rank (fused ranking: candidates incl. encode + search, fusion, exploration)",
        "wall": "**wall, partitions claimed → last output**",
    }
    stages = ("decode", "store", "encode", "search", "rank", "publish", "untimed", "wall")
    for stage in stages:
        cells = []
        for _, sums, batches, records in cols:
            sec = sums.get(stage, 0.0)
            cells.append(
                f"{fmt(1e3 * sec / batches, 1) if batches else '—'} | "
                f"{fmt(1e6 * sec / records, 0) if records else '—'} | "
                f"{fmt(100 * sec / sums['wall'], 0)} %"
            )
        lines.append(md_row([labels.get(stage, stage), *cells]))
    return lines


def stage_rows(stages: StageResult, worker_rate: float) -> tuple[list[str], list[str]]:
    """Per-stage table rows and the summary lines under it."""
    n = stages.events
    rates = {k: n / s for k, s in stages.seconds.items() if s > 0}
    serial = sum(stages.seconds.values())
    rows = []
    for name, s in stages.seconds.items():
        rows.append(
            f"| {name} | {stages.what[name]} | {fmt(rates.get(name, float('nan')))} | "
            f"{fmt(1e6 * s / n, 0)} | {fmt(100 * s / serial, 0)} % |"
        )
    slowest = min(rates, key=rates.__getitem__)
    bound = n / serial
    in_process = n / stages.pipeline_in_process_s if stages.pipeline_in_process_s else float("nan")
    notes = [
        f"- slowest stage: **{slowest}** at {fmt(rates[slowest])} events/s.",
        f"- whole worker (drain, steady) / slowest stage = {fmt(worker_rate)} / "
        f"{fmt(rates[slowest])} = **{worker_rate / rates[slowest]:.2f}**.",
        f"- serial bound (one thread runs every stage in turn: n / Σ stage seconds) = "
        f"{fmt(bound)} events/s; whole worker / serial bound = **{worker_rate / bound:.2f}**.",
        f"- `Pipeline.process` + `commit_batch` + `delete_outbox` in process, no Kafka "
        f"({stages.batches} batches): {fmt(in_process)} events/s.",
        "- store breakdown: "
        + ", ".join(
            f"{k.removeprefix('store: ')} {1e6 * v / n:.0f} µs/event"
            for k, v in stages.detail.items()
        )
        + ".",
    ]
    return rows, notes


def write_report(
    path: Path,
    args: argparse.Namespace,
    info: dict[str, str],
    settings: Settings,
    model: ServingModel,
    produce_s: float,
    runs: list[RunResult],
    stages: StageResult,
) -> str:
    """Write the Markdown report (and re-assemble BENCHMARKS.md); return it."""
    meta = model.files.meta
    drain = runs[0]
    db = "temp SQLite file (fresh)" if args.db_url is None else settings.safe_db_url()
    lines = [
        "# Worker throughput (`benchmarks/throughput.py`)",
        "",
        *run_lines(info, Path(sys.executable).name),
        f"- settings: {args.events:,} simulated events, {PARTITIONS} partitions, "
        f"batch_max_events {settings.batch_max_events}, poll_timeout_ms "
        f"{settings.poll_timeout_ms}, ranking {settings.ranking}, "
        f"encoder_threads {settings.encoder_threads}, top_k "
        f"{settings.top_k}, hnsw ef_search {settings.hnsw_ef_search}, history_max_len "
        f"{settings.history_max_len}",
        f"- model: {meta.version} (dim {meta.dim}, max_len {meta.max_len}, "
        f"{meta.num_items} items); worker database: `{db}`; broker: embedded tansu (memory), "
        "same machine",
        f"- input pre-produced with `traffic.produce_events` in {produce_s:.1f} s "
        f"({args.events / produce_s:,.0f} events/s)",
        "",
        "## Whole worker",
        "",
        "Drain: every event is in the topic before the worker starts. Paced: events produced "
        "while the worker runs, by another process. events/s counts recommendations received "
        "by a plain consumer (all partitions assigned; records counted, not end offsets).",
        "",
        *table_head(
            [
                "run",
                "received",
                "batches (mean size)",
                "events/s after the first batch",
                "events/s, worker start → last",
                "events/s, partitions claimed → last",
                "s to claim partitions",
                "s to first output",
                "paced rate",
            ],
            "lrrrrrrrr",
        ),
    ]
    for run in runs:
        lines += worker_run_rows(run)
    lines += [
        "",
        "## Event → recommendation latency",
        "",
        "Input ts is the input record's Kafka timestamp (CreateTime, stamped by the producer at "
        "`send`). Drain latencies include the time events waited in the backlog, so they grow "
        "with the position in it; the paced run shows the unqueued latency.",
        "",
        *table_head(["run", "measured", "n", "p50 ms", "p99 ms", "max ms"], "llrrrr"),
    ]
    for run in runs:
        lines += latency_rows(run)
    lines += [
        "",
        "## Where the worker's time went (its own stage histograms)",
        "",
        "`store` is the pipeline's dedupe read + `load_users` + fold, plus `commit_batch`; "
        "`publish` is send + flush + ack check + `delete_outbox`.",
        "",
        *worker_stage_table(runs),
        "",
        "## Each stage alone (same events, same process, worker stopped)",
        "",
        *table_head(["stage", "what is timed", "events/s", "µs/event", "share of Σ"], "llrrr"),
    ]
    rows, notes = stage_rows(stages, drain.steady_rate)
    lines += [*rows, "", *notes]
    errors = [f"- {r.name}: {r.error}" for r in runs if r.error]
    if errors:
        lines += ["", "## Problems", "", *errors]
    text = "\n".join(lines) + "\n"
    publish(path, text)
    return text
