"""Memory of the in-memory stream state per remembered user, pair and trending item (tracemalloc).

Prints the bytes one co-visitation user window costs (with 1, 5 and 20 events in it: the
README's figure for ``STREAMREC_COVISIT_MAX_USERS``), one co-visitation neighbour entry
(``STREAMREC_COVISIT_MAX_PAIRS``) and one trending row. Run::

    python benchmarks/covisit_memory.py [--users 50000]
"""

from __future__ import annotations

import argparse
import gc
import random
import tracemalloc

from streamrec.ranking.covisit import CoVisitation
from streamrec.ranking.trending import Trending

TS0_MS = 1_700_000_000_000


def _items(n_items: int) -> list[str]:
    return [f"item-{i:07d}" for i in range(n_items)]


def _covisit(n_users: int, items: list[str]) -> CoVisitation:
    """The worker's co-visitation (window 20, 30-day half-life) with every item keyed."""
    cv = CoVisitation(window=20, max_users=n_users, half_life_s=30 * 86400.0)
    for item in items:
        cv.key_of(item)
    return cv


def _start_tracing() -> int:
    """Start tracemalloc after a collection; the bytes traced at the start."""
    gc.collect()
    tracemalloc.start()
    return tracemalloc.get_traced_memory()[0]


def window_bytes_per_user(n_users: int, events_per_user: int, n_items: int = 100_000) -> float:
    """Bytes per user of the windows alone (item rows excluded), user id strings included."""
    rng, items = random.Random(0), _items(n_items)
    cv = _covisit(n_users, items)
    base = _start_tracing()
    ts = TS0_MS
    for _ in range(events_per_user):
        for u in range(n_users):
            cv.observe(f"user-{u:09d}", items[rng.randrange(n_items)], "click", ts)
            ts += 1
    gc.collect()
    with_windows = tracemalloc.get_traced_memory()[0] - base
    cv._recent.clear()  # what remains is the item rows
    gc.collect()
    rows = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return (with_windows - rows) / n_users


def bytes_per_pair(n_users: int = 20_000, n_items: int = 100_000) -> float:
    """Bytes per co-visitation neighbour entry (item rows only), skewed item popularity."""
    rng, items = random.Random(0), _items(n_items)
    cv = _covisit(n_users, items)
    base = _start_tracing()
    ts = TS0_MS
    for _ in range(20):
        for u in range(n_users):
            item = items[min(int(rng.expovariate(1 / 3000)), n_items - 1)]
            cv.observe(f"user-{u:09d}", item, "click", ts)
            ts += 1
    cv._recent.clear()
    gc.collect()
    rows = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return rows / sum(len(row.keys) for row in cv._rows.values())


def trending_bytes_per_item(n_items: int) -> float:
    """Bytes per trending row (id string, row map entry, score)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    trending = Trending(7 * 86400.0)
    for i in range(n_items):
        trending.observe(f"item-{i:07d}", "click", TS0_MS + i)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used / n_items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    args = parser.parse_args()
    for events in (1, 5, 20):
        per_user = window_bytes_per_user(args.users, events)
        print(f"co-visitation window, {events:2d} events/user: {per_user:6.0f} B per user")
    print(f"co-visitation neighbour entry: {bytes_per_pair():.0f} B")
    print(f"trending row: {trending_bytes_per_item(200_000):.0f} B per item")


if __name__ == "__main__":
    main()
