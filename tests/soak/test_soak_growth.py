"""The soak's growth verdict (``benchmarks/soak_report.py``) on series of known shape."""

from __future__ import annotations

import numpy as np
from soak_report import BEGIN, END, still_grows, write_section

MIB = 1024 * 1024
T = list(range(0, 1800, 60))  # 30 samples, one a minute


def test_a_steady_climb_still_grows() -> None:
    values = [500 * MIB + t * 70_000 for t in T]  # 4 MiB a minute, never levelling off
    assert still_grows("rss_bytes", T, values).grows


def test_a_plateau_with_noise_does_not_grow() -> None:
    rng = np.random.default_rng(0)
    values = [min(t, 600) * 500_000 + 400 * MIB + rng.normal(0, 2 * MIB) for t in T]
    assert not still_grows("rss_bytes", T, values).grows


def test_a_bounded_sawtooth_does_not_grow() -> None:
    # deleted items: rise for 8 minutes, dropped by a compaction, again and again
    values = [float((t // 60) % 8 * 1000) for t in T]
    assert not still_grows("index_deleted", T, values).grows


def test_growth_late_in_the_run_is_caught() -> None:
    values = [1000.0 if t < 1200 else 1000.0 + (t - 1200) * 10 for t in T]
    assert still_grows("rows_applied_events", T, values).grows


def test_small_absolute_changes_are_noise() -> None:
    assert not still_grows("rows_users", T, [10.0 + i for i in range(len(T))]).grows


def test_too_few_samples_never_count() -> None:
    assert not still_grows("rows_users", [0, 1, 2], [1.0, 1e6, 1e9]).grows


def test_the_section_replaces_only_its_block(tmp_path) -> None:  # type: ignore[no-untyped-def]
    doc = tmp_path / "R.md"
    doc.write_text(f"intro\n{BEGIN}\nold\n{END}\noutro\n")
    write_section(doc, "new table")
    assert doc.read_text() == f"intro\n{BEGIN}\nnew table\n{END}\noutro\n"
