"""Confidence intervals for replay metrics and off-policy estimates (pure, numpy, seeded).

Events and lists of one user are not independent (the same tastes, one history feeding the
next list), so intervals resample **users**, not events: a cluster bootstrap. Each user
contributes a row of sums (events, hits, NDCG gains, importance-weighted rewards, ...); a
bootstrap replicate draws the users with replacement (multinomial counts ``W``), adds their
rows (``W @ rows``) and computes the statistic from the totals. Percentile intervals, except
for coverage (``coverage_interval``). (``ope.estimate``'s ``ips_stderr`` treats lists as
independent: narrower than the user bootstrap when users have many lists.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Stat = Callable[[np.ndarray], np.ndarray]
WEIGHT_CELLS = 4_000_000  # bootstrap weights held at once (replicates x users), 32 MB


def cluster_bootstrap(
    rows: np.ndarray, stat: Stat, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """A statistic of summed rows, with a percentile interval from resampling the rows.

    Args:
        rows: one row per cluster (user) of sums, shape ``(clusters, m)``.
        stat: maps totals of shape ``(b, m)`` to ``b`` values (vectorised over replicates).
        n_boot: bootstrap replicates.
        level: coverage of the interval.
        seed: seed of the resampling (the same rows and seed give the same interval).

    Returns:
        ``(value, low, high)``: the statistic of all rows, and the interval. With fewer than
        two clusters the interval is the value itself.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"rows must be 2-d (clusters, m), got shape {rows.shape}")
    value = float(stat(rows.sum(axis=0, keepdims=True))[0])
    n = rows.shape[0]
    if n < 2 or n_boot < 1:
        return value, value, value
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, WEIGHT_CELLS // n))  # bounded memory for many users
    parts = []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            parts.append(stat(weights @ rows))
    reps = np.concatenate(parts)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return value, math.nan, math.nan
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(reps, [tail, 1.0 - tail])
    return value, float(low), float(high)


def ratio(num: int, den: int) -> Stat:
    """The statistic ``total[num] / total[den]`` (a mean per event, per list)."""

    def stat(totals: np.ndarray) -> np.ndarray:
        return np.asarray(totals[:, num] / totals[:, den])

    return stat


def coverage_interval(
    incidence: np.ndarray, catalog_size: int, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Catalog coverage (distinct items shown / catalog size), resampling users.

    Args:
        incidence: ``(users, items)``, nonzero where a list of the user showed the item.
        catalog_size: the denominator.

    Returns:
        ``(value, low, high)``: the value +- z * the standard deviation of bootstrap
        replicates over users, within [0, 1]. Coverage is a distinct count, not a sum: a
        replicate loses every item that only the users it left out were shown (about a third
        of the items one user saw), so replicates sit below the value and a percentile
        interval would often not contain it; their spread still measures how much the count
        depends on which users an arm got.
    """
    shown = (np.asarray(incidence) > 0).astype(np.float32)
    size = max(catalog_size, 1)

    def stat(totals: np.ndarray) -> np.ndarray:
        return np.asarray((totals > 0).sum(axis=1) / size, dtype=np.float64)

    if shown.shape[0] < 2:
        value = float((shown.sum(axis=0) > 0).sum() / size)
        return value, value, value
    # the bootstrap on float32 (a users x items matmul per chunk of replicates)
    rng = np.random.default_rng(seed)
    n = shown.shape[0]
    value = float(stat(shown.sum(axis=0, keepdims=True))[0])
    reps: list[np.ndarray] = []
    chunk = max(1, min(100, WEIGHT_CELLS // n))
    for start in range(0, n_boot, chunk):
        count = min(chunk, n_boot - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=count).astype(np.float32)
        reps.append(stat(weights @ shown))
    half = _z(level) * float(np.std(np.concatenate(reps), ddof=1))
    return value, max(value - half, 0.0), min(value + half, 1.0)


def _z(level: float) -> float:
    """The two-sided normal quantile of ``level`` (1.96 for 0.95)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2.0)
