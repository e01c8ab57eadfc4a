"""The report of ``throughput.py``: ``THROUGHPUT.md`` and the curves' PNG, from its results.

Not a script: ``throughput.py`` imports it (this folder is on ``sys.path`` then).
"""

from __future__ import annotations

import argparse
from typing import Any

from harness import fmt, md_row, publish, table_head
from throughput_plot import plot_curves
from throughput_tables import (
    curve_rows,
    headline,
    phase_rows,
    recall_rows,
    stage_rows,
    worker_stage_rows,
)

NAN = float("nan")


def _run_note(part: dict[str, Any], what: str) -> list[str]:
    return [f"{what}:", "", *part.get("lines", ["- not run yet"])]


def main_section(main: dict[str, Any], title: str = "Main run") -> list[str]:
    """The main run: settings, headline, phases, stages, ceiling, recall."""
    if not main:
        return ["The main run has not been run yet (`--parts main`)."]
    s = main.get("settings", {})
    model = main.get("model", {})
    phases = main["phases"]
    ceiling = main.get("ceiling", {})
    items, trained = main["items"], main["trained_items"]
    settings = ", ".join(f"{k} {v}" for k, v in s.items())
    produced = phases[0]["events"]
    return [
        *_run_note(main, title),
        f"- settings (the defaults): {settings}; database: a fresh SQLite file; broker: "
        "embedded tansu (memory), same machine, 4 partitions per topic",
        f"- model: {model.get('version', '?')} (dim {model.get('dim', '?')}, trained on "
        f"simulated events, {model.get('items', '?')} items)",
        f"- catalog: {items:,} items through the catalog topic, each record with a "
        f"{model.get('dim', '?')}-float vector: the {trained:,} trained items and "
        f"{items - trained:,} catalog items mixed around trained vectors; produced in "
        f"{main['catalog_produce_s']:.1f} s ({items / main['catalog_produce_s']:,.0f} records/s); "
        f"the worker had every item searchable {fmt(main['catalog_s'], 1)} s after it started "
        f"(claimed its partitions at {fmt(main['claimed_s'], 1)} s, first output at "
        f"{fmt(main['first_output_s'], 1)} s)"
        + (
            "; it claimed its partitions before the catalog was complete (its catch-up before "
            "consuming is bounded in time; the rest was applied a slice per loop iteration)"
            if main["claimed_s"] < main["catalog_s"]
            else ""
        )
        + (
            "; **it answered events before its catalog was complete**"
            if main["first_output_s"] < main["catalog_s"]
            else ""
        ),
        f"- warm-up (`throughput_warm.py`): the worker starts over {main['warm_events']:,} "
        f"events already applied ({main['warm_users']:,} users' states in its database, the "
        "events in the topic before its stored offsets), and restores its stream state from "
        "them as after any restart: the drain measures a warm worker, every user's "
        "co-visitation window about full, not a cold start",
        f"- traffic: {produced:,} drain events from {main['users']:,} users over "
        f"{main['distinct_items']:,} distinct items (Zipf-like popularity, exponent "
        f"{main['zipf_s']}, trained items most popular: "
        f"{100 * main['trained_share']:.0f} % of the events), a next click following the last "
        f"item's fixed successor half the time, 10 % purchases; backlog produced in "
        f"{main['produce_s']:.1f} s before the worker started",
        "",
        *headline(main),
        "",
        "### The worker's phases",
        "",
        "events/s counts outputs after the first batch's (a batch shares one `generated_at`) "
        "to the last. Latency is the output record's timestamp (the relay's send, after the "
        "database commit) minus the input record's (the producer's send); drain latencies "
        "include the wait in the backlog. The history phases run on the same worker after "
        "the paced phase: users whose history (part of the warm-up: the last "
        "`covisit_window` events applied, the earlier ones only in their state) reaches the "
        "given length with the measured event, one event per user; a burst is produced while "
        "the worker is idle, then a paced phase at half its rate.",
        "",
        *phase_rows(phases),
        "",
        "Where the worker's time went, µs per event from its own stage histograms (`rank` is "
        "the fused ranking: encoder, ANN search, the other sources, fusion, exploration, "
        "new-item vectors):",
        "",
        *worker_stage_rows(phases),
        "",
        "### Each stage alone (the same drain events, the worker stopped)",
        "",
        *stage_rows(main),
        "",
        "### The ceiling: consume → decode → produce",
        "",
        f"A plain kafka-python loop on the same broker (group-less consumer, "
        f"`batch_max_events` per poll, decode, the worker's producer settings, a flush per "
        f"batch), over the drain's {fmt(ceiling.get('events', NAN))} records: "
        f"**{fmt(ceiling.get('rate', NAN))} events/s** ({fmt(ceiling.get('read_back', NAN))} "
        "records read back). No database, no model: the most one Python thread gets through "
        "this broker.",
        "",
        "### Index quality: HNSW against exact search",
        "",
        *recall_rows(main.get("recall", {})),
    ]


def report_text(args: argparse.Namespace, results: dict[str, Any]) -> str:
    """The whole section file."""
    main = results.get("main", {})
    cat, hist = curve_rows(results)
    lines = [
        "# Worker throughput, latency and cost curves (`benchmarks/throughput.py`, issue 13)",
        "",
        "`make bench`: the default worker (fused ranking, SQLite) on a large catalog loaded "
        "through the catalog topic, one embedded broker, one live worker; each stage alone on "
        "the same events; a plain Kafka passthrough as the ceiling; every output read back; "
        "recall of the index; cost curves. Read every figure with the load average noted "
        "(the machine is shared) and prefer the ratios within one run. The worker is being "
        "optimized while this benchmark lands: the figures are of the worker at the run's "
        "date.",
        "",
        *main_section(main),
        "",
        *confluent_section(main, results.get("main_confluent", {})),
        "## Cost curves",
        "",
        f"![events/s and p99 against catalog size and history length]({args.plot.name})",
        "",
        "Against catalog size. Through the broker: the whole worker, drain events/s and p99 "
        "of a paced phase at 50 % of it (the main run at its size, a separate broker session "
        "per other size, catalog through the topic each time). In process: index + fused "
        "ranking + SQLite store, no broker (`throughput_inprocess.py`), the index built in one "
        "call; p99 there is a batch's end minus the event's arrival, arrivals at 50 % of the "
        f"in-process rate. Sizes above {args.broker_max_items:,} items are measured in process "
        "only: the embedded broker keeps everything in memory and the worker applies the "
        "catalog one record at a time, so a million vector records through it is beyond the "
        "benchmark's time budget.",
        "",
        *cat,
        "",
        "Against history length (the main run's worker, see its phases above):",
        "",
        *hist,
        "",
        *_run_note(results.get("broker_curve", {}), "Catalog-size points through the broker"),
        "",
        *_run_note(results.get("inprocess_curve", {}), "In-process points"),
        *profile_rows(results),
    ]
    problems = [f"- {p['name']}: {p['error']}" for p in main.get("phases", []) if p.get("error")]
    if main.get("stop_problem"):
        problems.append(f"- {main['stop_problem']}")
    if problems:
        lines += ["", "## Problems", "", *problems]
    return "\n".join(lines) + "\n"


def confluent_section(main: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """The main run again with ``STREAMREC_OUTPUT_CLIENT=confluent-kafka`` (``--parts
    main-confluent``): the output client's share, measured on the same machine and day."""
    if not other:
        return []
    drain = [p["rate"] for p in (main.get("phases", [{}])[0], other["phases"][0])]
    return [
        "## The main run with `STREAMREC_OUTPUT_CLIENT=confluent-kafka`",
        "",
        "The same session (catalog, warm-up, traffic, phases, stages) with the optional "
        "confluent-kafka output producer (`pip install 'streamrec[confluent]'`): librdkafka "
        "builds and sends the output on native threads, so publishing no longer takes the "
        "worker's GIL from its poll loop. The default stays kafka-python. Drain: "
        f"{drain[1]:,.0f} events/s against {drain[0]:,.0f} with kafka-python "
        f"({drain[1] / drain[0]:.2f}x).",
        "",
        *main_section(other, "Main run, confluent-kafka output"),
        "",
    ]


def write_report(args: argparse.Namespace, results: dict[str, Any]) -> str:
    """Write the Markdown report and the plot (and re-assemble BENCHMARKS.md); return it."""
    plot_curves(args.plot, results)
    text = report_text(args, results)
    publish(args.out, text)
    return text


def profile_rows(results: dict[str, Any]) -> list[str]:
    """The in-process drain's profile at the main run's size (``throughput_profile.py``)."""
    points = results.get("inprocess_curve", {}).get("points", {})
    found = [(n, p["profile"]) for n, p in points.items() if "profile" in p]
    if not found:
        return []
    n, prof = found[0]
    total = prof["total_s"]
    per_event = 1e6 / prof["events"]
    lines = [
        "",
        f"## Where the time goes: profile of the in-process drain at {int(n):,} items",
        "",
        f"`cProfile` over {prof['events']:,} more events after the in-process point's timed "
        f"drain ({total:.2f} s under the profiler, which slows Python code more than native "
        "code): each row is the cumulative time of the named functions.",
        "",
        *table_head(["part", "µs / event", "share"], " rr"),
    ]
    for name, seconds in sorted(prof["groups"].items(), key=lambda kv: -kv[1]):
        lines.append(md_row([name, f"{seconds * per_event:,.0f}", f"{seconds / total:.0%}"]))
    return lines
