"""The soak run's verdict, plot and RELIABILITY.md section (``benchmarks/soak.py`` writes them).

**Growth** (``still_grows``): a series still grows in its last third when both

* the least-squares slope over the last third's samples, times that third's duration, exceeds
  ``tolerance`` of the third's mean value (5 %; 2 % for RSS) and an absolute floor
  (``FLOORS``: 16 MiB of RSS, 4,096 trending rows, 100 rows or items else), i.e. the fitted
  line rises by more than that across the third; and
* the last third's maximum exceeds the middle third's maximum by more than the same margin.

The second condition lets a bounded sawtooth pass (deleted items rising until a compaction,
``applied_events`` rising until the retention window prunes it): its fitted slope can be
positive in any one third, but its peaks do not rise. A series that climbs steadily fails both
ways. Slower growth is below the soak's resolution: at 1 GiB of RSS and a 10-minute third,
about 2 MiB a minute. Not a script: ``soak.py`` imports it (this folder is on ``sys.path`` then).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"
TOLERANCE = 0.05
MIB = 1024 * 1024
# RSS: a tighter share (a leak of 1 % per third is ~14 % an hour), but a floor for malloc noise
TOLERANCES = {"rss_bytes": 0.02}
# below these absolute rises over the last third, nothing counts as growth (noise, rounding)
# (trending prunes only once it holds 4,096 rows: ``streamrec.ranking.trending``)
FLOORS = {"rss_bytes": 16 * MIB, "state_trending_items": 4096.0}
DEFAULT_FLOOR = 100.0


@dataclass(frozen=True)
class Growth:
    """One series' verdict over its last third."""

    name: str
    rise: float  # fitted rise across the last third (slope x duration)
    mean: float  # mean over the last third
    peak_rise: float  # last third's max minus the middle third's max
    grows: bool


def still_grows(
    name: str, t_s: Sequence[float], values: Sequence[float], tolerance: float | None = None
) -> Growth:
    """Whether ``values`` (sampled at ``t_s`` seconds) still grows in its last third (module
    docstring). Fewer than six samples never count as growth (too few to tell)."""
    t, v = np.asarray(t_s, dtype=np.float64), np.asarray(values, dtype=np.float64)
    n = len(v)
    if n < 6:
        return Growth(name, 0.0, float(v.mean()) if n else 0.0, 0.0, False)
    last, middle = slice(n - n // 3, n), slice(n - 2 * (n // 3), n - n // 3)
    tl, vl = t[last], v[last]
    slope = float(np.polyfit(tl, vl, 1)[0]) if np.ptp(tl) > 0 else 0.0
    rise = slope * float(np.ptp(tl))
    mean = float(vl.mean())
    share = TOLERANCES.get(name, TOLERANCE) if tolerance is None else tolerance
    margin = max(share * abs(mean), FLOORS.get(name, DEFAULT_FLOOR))
    peak_rise = float(vl.max() - v[middle].max())
    return Growth(name, rise, mean, peak_rise, rise > margin and peak_rise > margin)


def verdicts(samples: Sequence[Mapping[str, float]], series: Sequence[str]) -> list[Growth]:
    """``still_grows`` for each named series of ``samples`` (each sample has ``t_s``)."""
    t = [s["t_s"] for s in samples]
    return [still_grows(name, t, [s.get(name, 0.0) for s in samples]) for name in series]


def plot(samples: Sequence[Mapping[str, float]], series: Sequence[str], path: Path) -> None:
    """One small panel per series against minutes, the last third shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = np.asarray([s["t_s"] for s in samples]) / 60
    cols = 3
    rows = (len(series) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, series, strict=False):
        values = np.asarray([s.get(name, 0.0) for s in samples], dtype=np.float64)
        scale, unit = (MIB, " (MiB)") if name.endswith("_bytes") else (1.0, "")
        ax.plot(minutes, values / scale, marker=".", linewidth=1)
        if len(minutes) >= 6:
            ax.axvspan(minutes[len(minutes) - len(minutes) // 3], minutes[-1], alpha=0.12)
        ax.set_title(name + unit, fontsize=9)
        ax.set_xlabel("minutes", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(series) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt(name: str, x: float) -> str:
    return f"{x / MIB:,.0f} MiB" if name.endswith("_bytes") else f"{x:,.0f}"


def table(samples: Sequence[Mapping[str, float]], growth: Sequence[Growth]) -> list[str]:
    """One row per series: first, min, max, last, the last third's fitted rise, the verdict."""
    lines = [
        "| series | first | min | max | last | last third: fitted rise (mean) "
        "| peak vs middle third | still grows? |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for g in growth:
        v = [s.get(g.name, 0.0) for s in samples]
        lines.append(
            f"| {g.name} | {_fmt(g.name, v[0])} | {_fmt(g.name, min(v))} | "
            f"{_fmt(g.name, max(v))} | {_fmt(g.name, v[-1])} | {_fmt(g.name, g.rise)} "
            f"({_fmt(g.name, g.mean)}) | {_fmt(g.name, g.peak_rise)} | "
            f"{'**yes**' if g.grows else 'no'} |"
        )
    return lines


def write_section(doc: Path, body: str) -> None:
    """Replace the block between the soak markers in ``doc`` (appended when absent)."""
    text = doc.read_text() if doc.is_file() else ""
    block = f"{BEGIN}\n{body.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Soak: bounded memory and storage (issue 15)\n\n"
        text += block + "\n"
    doc.write_text(text)
