"""The cost curves of ``throughput.py`` as one PNG (matplotlib, Agg): events/s and p99 against
catalog size (the worker through the broker, and in one process) and against history length.

Not a script: ``throughput_report.py`` imports it (this folder is on ``sys.path`` then).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from throughput_tables import history_points

NAN = float("nan")


def _series(
    points: dict[str, Any], rate: Any, p99: Any
) -> tuple[list[int], list[float], list[float]]:
    sizes = sorted(int(k) for k in points)
    return (
        sizes,
        [rate(points[str(n)]) for n in sizes],
        [1000 * p99(points[str(n)]) for n in sizes],
    )


def _drain_rate(session: dict[str, Any]) -> float:
    phases = session.get("phases", [])
    return float(phases[0]["rate"]) if phases else NAN


def _paced_p99(session: dict[str, Any]) -> float:
    paced = [p for p in session.get("phases", []) if p["name"].startswith("paced")]
    return float(paced[0]["p99"]) if paced else NAN


def plot_curves(path: Path, results: dict[str, Any]) -> None:
    """Write the 2 x 2 figure to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = results.get("main", {})
    broker = dict(results.get("broker_curve", {}).get("points", {}))
    if main.get("phases"):
        broker[str(main["items"])] = main
    inproc = results.get("inprocess_curve", {}).get("points", {})
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    (a_rate, a_p99), (h_rate, h_p99) = axes
    for label, points, rate, p99, style in (
        ("worker via broker", broker, _drain_rate, _paced_p99, "o-"),
        (
            "in process (no broker)",
            inproc,
            lambda p: p.get("rate", NAN),
            lambda p: p.get("p99", NAN),
            "s--",
        ),
    ):
        if points:
            sizes, rates, p99s = _series(points, rate, p99)
            a_rate.plot(sizes, rates, style, label=label)
            a_p99.plot(sizes, p99s, style, label=label)
    for ax, title in ((a_rate, "events/s (drain)"), (a_p99, "p99 ms at 50 % of drain")):
        ax.set_xscale("log")
        ax.set_xlabel("catalog items")
        ax.set_title(f"{title} vs catalog size")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    hist = history_points(main)
    if hist:
        hs = [h for h, _, _ in hist]
        h_rate.plot(hs, [b.get("rate", NAN) for _, b, _ in hist], "o-", label="worker via broker")
        h_p99.plot(
            hs, [1000 * p.get("p99", NAN) for _, _, p in hist], "o-", label="worker via broker"
        )
    for ax, title in ((h_rate, "events/s (burst)"), (h_p99, "p99 ms at 50 % of burst")):
        ax.set_xlabel("history length (events, incl. the current one)")
        ax.set_title(f"{title} vs history length, {main.get('items', 0):,} items")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
