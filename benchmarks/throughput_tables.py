"""The tables of ``throughput.py``'s report, from its results (plain values).

Not a script: ``throughput.py`` imports it (this folder is on ``sys.path`` then).
"""

from __future__ import annotations

from typing import Any

from harness import fmt, md_row, ms, table_head

NAN = float("nan")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if a == a and b == b and b else "—"


def headline(main: dict[str, Any]) -> list[str]:
    """The five figures of issue 13 and the checks, as one table."""
    phases = main.get("phases", [])
    drain = phases[0] if phases else {}
    paced: dict[str, Any] = next((p for p in phases if p["name"].startswith("paced")), {})
    stages = main.get("stages", {})
    n = stages.get("events", 0)
    rates = {k: n / s for k, s in stages.get("seconds", {}).items() if s > 0}
    slow = min(rates, key=rates.__getitem__) if rates else None
    ceiling = main.get("ceiling", {})
    once = main.get("exactly_once", {})
    rec = main.get("recall", {})
    rate = drain.get("rate", NAN)
    lines = table_head(["measure", "result"], "lr")
    rows = [
        ("(1) drain, events/s (after the first batch)", fmt(rate)),
        (
            f"(2) paced at {fmt(paced.get('rate_target', NAN))} events/s: p50 / p99 "
            "(output record ts - input record ts)",
            f"{ms(paced.get('p50', NAN))} / {ms(paced.get('p99', NAN))} ms",
        ),
        (
            "(3) slowest stage alone",
            f"{slow}: {fmt(rates[slow])} events/s" if slow else "—",
        ),
        ("(4) whole worker / slowest stage alone", _ratio(rate, rates[slow]) if slow else "—"),
        (
            "(5) ceiling: kafka-python consume → decode → produce, events/s; worker / ceiling",
            f"{fmt(ceiling.get('rate', NAN))}; {_ratio(rate, ceiling.get('rate', NAN))}",
        ),
        (
            "every event answered exactly once (output topic read back)",
            f"{'yes' if once.get('ok') else '**NO**'}: {fmt(once.get('records', NAN))} records "
            f"for {fmt(once.get('produced', NAN))} events, {once.get('dup_rec_ids', '—')} "
            f"duplicate rec_id, {once.get('dup_event_ids', '—')} duplicate event_id, "
            f"{once.get('missing', '—')} missing",
        ),
        (
            f"recall@{rec.get('k', 10)} of the worker's HNSW index at ef {rec.get('ef', '—')} "
            "(bar 0.95)",
            f"{fmt(rec.get('recall', NAN), 3)}" + (" ✓" if rec.get("recall", 0) >= 0.95 else " ✗"),
        ),
    ]
    return lines + [md_row(r) for r in rows]


def phase_rows(phases: list[dict[str, Any]]) -> list[str]:
    """The phases of one session: counts, rates, latency."""
    lines = table_head(
        [
            "phase",
            "answered",
            "batches (mean size)",
            "events/s",
            "target /s",
            "p50 ms",
            "p99 ms",
            "max ms",
        ],
        "lrrrrrrr",
    )
    for p in phases:
        lines.append(
            md_row(
                [
                    p["name"],
                    f"{p['received']:,}/{p['events']:,}",
                    f"{fmt(p['batches'])} ({fmt(p['mean_batch'])})",
                    fmt(p["rate"]),
                    fmt(p["rate_target"]) if p["rate_target"] else "—",
                    ms(p["p50"]),
                    ms(p["p99"]),
                    ms(p["max"]),
                ]
            )
        )
    return lines


def worker_stage_rows(phases: list[dict[str, Any]]) -> list[str]:
    """µs per event per stage from the worker's own histograms, per phase."""
    # stages the worker does not time separately (encode and search are inside the fused
    # ranking's "rank") stay at zero: left out
    names = sorted({s for p in phases for s, us in p["stage_us"].items() if us >= 0.5})
    lines = table_head(
        ["stage (worker histogram)", *[p["name"] for p in phases]], "l" + "r" * len(phases)
    )
    for s in names:
        lines.append(md_row([s, *[fmt(p["stage_us"].get(s, NAN)) for p in phases]]))
    lines.append(
        md_row(
            [
                "**wall: 1e6 / events/s**",
                *[
                    fmt(1e6 / p["rate"]) if p["rate"] == p["rate"] and p["rate"] else "—"
                    for p in phases
                ],
            ]
        )
    )
    return lines


def stage_rows(main: dict[str, Any]) -> list[str]:
    """Each stage alone, and what follows from it."""
    st = main.get("stages")
    if not st:
        return ["Not measured in this run."]
    n = st["events"]
    serial = sum(st["seconds"].values())
    lines = table_head(["stage", "what is timed", "events/s", "µs/event", "share of Σ"], "llrrr")
    for name, s in st["seconds"].items():
        lines.append(
            md_row(
                [
                    name,
                    st["what"][name],
                    fmt(n / s if s else NAN),
                    fmt(1e6 * s / n),
                    f"{fmt(100 * s / serial)} %",
                ]
            )
        )
    rate = main["phases"][0]["rate"]
    in_process = n / st["pipeline_in_process_s"] if st["pipeline_in_process_s"] else NAN
    detail = ", ".join(f"{k} {1e6 * v / n:,.0f} µs/event" for k, v in st["detail"].items())
    return [
        *lines,
        "",
        f"- serial bound (one thread doing every stage in turn, n / Σ) = {fmt(n / serial)} "
        f"events/s; whole worker (drain) / serial bound = **{_ratio(rate, n / serial)}**.",
        "- a ratio above 1 is possible: the worker publishes on its relay thread while its "
        "poll thread ranks the next batch (the serial bound adds the two), and the stages "
        "alone run after the worker, on a shared machine (read ratios near 1 as equal).",
        f"- `Pipeline.process` + `commit_batch` + `delete_outbox` in process, no Kafka "
        f"({st['batches']} batches, the recording pass): {fmt(in_process)} events/s.",
        f"- breakdown: {detail}.",
    ]


def recall_rows(rec: dict[str, Any]) -> list[str]:
    """Recall of the worker's index and of the one-call graph per ef."""
    if not rec:
        return ["Not measured in this run."]
    lines = [
        f"{rec['queries']:,} queries (the encoder's user vectors of the drain's events) over "
        f"{rec['items']:,} live items; exact = brute-force numpy inner product. HNSW M "
        f"{rec['m']}, ef_construction {rec['ef_construction']}.",
        "",
        *table_head(["graph", "ef", f"recall@{rec['k']}", "µs/query"], "lrrr"),
        md_row(
            [
                "the worker's index (catalog applied record by record from the topic)",
                str(rec["ef"]),
                f"**{rec['recall']:.3f}**",
                fmt(rec["us_per_query"]),
            ]
        ),
    ]
    for row in rec.get("worker_sweep", []):
        lines.append(
            md_row(
                [
                    "the worker's index, a wider beam",
                    str(row["ef"]),
                    f"{row['recall']:.3f}",
                    fmt(row["us_per_query"]),
                ]
            )
        )
    for row in rec.get("sweep", []):
        lines.append(
            md_row(
                [
                    f"same vectors, built in one call ({row['build_s']:.0f} s, 2 threads)",
                    str(row["ef"]),
                    f"{row['recall']:.3f}",
                    fmt(row["us_per_query"]),
                ]
            )
        )
    return lines


def curve_rows(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Catalog-size and history-length tables."""
    main = results.get("main", {})
    broker = dict(results.get("broker_curve", {}).get("points", {}))
    if main.get("phases"):
        broker[str(main["items"])] = main
    inproc = results.get("inprocess_curve", {}).get("points", {})
    sizes = sorted({int(k) for k in [*broker, *inproc]})
    cat = table_head(
        [
            "catalog items",
            "worker via broker: events/s",
            "p99 ms",
            "in process: events/s",
            "p99 ms",
            "index build s (in process)",
        ],
        "rrrrrr",
    )
    for n in sizes:
        b, i = broker.get(str(n), {}), inproc.get(str(n), {})
        bp = b.get("phases", [])
        drain = bp[0] if bp else {}
        paced: dict[str, Any] = next((p for p in bp if p["name"].startswith("paced")), {})
        cat.append(
            md_row(
                [
                    f"{n:,}",
                    fmt(drain.get("rate", NAN)),
                    ms(paced.get("p99", NAN)),
                    fmt(i.get("rate", NAN)),
                    ms(i.get("p99", NAN)),
                    fmt(i.get("build_s", NAN), 1),
                ]
            )
        )
    hist = table_head(["history length", "burst events/s", "paced /s", "p50 ms", "p99 ms"], "rrrrr")
    for h, burst, paced in history_points(main):
        hist.append(
            md_row(
                [
                    str(h),
                    fmt(burst.get("rate", NAN)),
                    fmt(paced.get("rate_target", NAN)),
                    ms(paced.get("p50", NAN)),
                    ms(paced.get("p99", NAN)),
                ]
            )
        )
    return cat, hist


def history_points(main: dict[str, Any]) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(history length, burst phase, paced phase) of the main session."""
    out = []
    phases = {p["name"]: p for p in main.get("phases", [])}
    for name, burst in phases.items():
        if name.startswith("history ") and name.endswith(": burst"):
            h = int(name.split()[1].rstrip(":"))
            out.append((h, burst, phases.get(f"history {h}: paced", {})))
    return sorted(out, key=lambda t: t[0])
