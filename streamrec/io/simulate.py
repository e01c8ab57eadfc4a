"""Synthetic shop traffic, seeded: users with tastes, items with popularity, clicks then purchases.

Items belong to categories; a user prefers a few categories; within a category popularity is
Zipf-like. Sessions have a sequential habit (the next click is often the item "after" the last
one in its category), which a sequence model can learn and a popularity list cannot.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from streamrec.core.events import CatalogOp, Event

BASE_TS_MS = 1_700_000_000_000


@dataclass(frozen=True)
class SimConfig:
    """Shape of the simulated shop.

    Attributes:
        users: number of users.
        items: number of items.
        categories: number of item categories.
        purchase_rate: probability that a click is followed by a purchase of the same item.
        sequential_rate: probability that the next click follows the category's sequence.
        seed: random seed; the same seed gives the same traffic.
    """

    users: int = 1000
    items: int = 500
    categories: int = 20
    purchase_rate: float = 0.1
    sequential_rate: float = 0.6
    seed: int = 0


def item_id(i: int) -> str:
    """Id of simulated item i."""
    return f"i{i}"


def user_id(u: int) -> str:
    """Id of simulated user u."""
    return f"u{u}"


class Simulator:
    """Generates events; every call to ``events`` continues the same world."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        c = config
        self.category = np.arange(c.items) % c.categories
        self.members = [np.flatnonzero(self.category == k) for k in range(c.categories)]
        self.popularity = [1.0 / np.arange(1, len(m) + 1) ** 0.8 for m in self.members]
        self.popularity = [p / p.sum() for p in self.popularity]
        self.taste = self.rng.dirichlet(np.full(c.categories, 0.2), size=c.users)
        self.last: dict[int, int] = {}
        self.counter = 0

    def catalog(self, ts_ms: int = BASE_TS_MS) -> list[CatalogOp]:
        """An upsert for every item."""
        return [
            CatalogOp(item_id=item_id(i), op="upsert", available=True, ts=ts_ms)
            for i in range(self.config.items)
        ]

    def _next_item(self, u: int) -> int:
        last = self.last.get(u)
        if last is not None and self.rng.random() < self.config.sequential_rate:
            members = self.members[self.category[last]]
            pos = int(np.searchsorted(members, last))
            return int(members[(pos + 1) % len(members)])
        k = int(self.rng.choice(self.config.categories, p=self.taste[u]))
        return int(self.rng.choice(self.members[k], p=self.popularity[k]))

    def events(self, n: int, start_ts_ms: int = BASE_TS_MS, step_ms: int = 1000) -> Iterator[Event]:
        """The next n events (clicks, some followed by a purchase)."""
        emitted = 0
        while emitted < n:
            u = int(self.rng.integers(self.config.users))
            i = self._next_item(u)
            self.last[u] = i
            kinds = ["click"]
            if self.rng.random() < self.config.purchase_rate:
                kinds.append("purchase")
            for kind in kinds:
                if emitted >= n:
                    break
                ts = start_ts_ms + self.counter * step_ms
                yield Event(
                    event_id=f"e{self.config.seed}-{self.counter}",
                    user_id=user_id(u),
                    item_id=item_id(i),
                    type=kind,  # type: ignore[arg-type]
                    ts=ts,
                )
                self.counter += 1
                emitted += 1
