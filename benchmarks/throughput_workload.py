"""The throughput benchmark's workload: a large catalog with vectors, and skewed traffic on it.

Catalog: the model's trained items (their trained vectors) plus ``n - trained`` catalog items
``c0, c1, ...`` whose vectors are a random mixture around trained vectors (``a * v_p + (1 - a)
* v_q + noise``, two random trained parents, ``a`` uniform in [0.6, 1]), so that every item
has a vector in the model's dimension and the vectors are clustered as trained ones are.

Traffic: users (uniform) click items drawn from a Zipf-like popularity over the catalog
(``p(rank r) ~ 1 / (r + 1) ** s``); the trained items are the most popular (the model was
trained because they had traffic), the catalog items follow in a seeded random order. A
user's next click follows a fixed successor of their last item with probability
``sequential``, which gives co-visitation something to learn; a click is followed by a
purchase of the same item with probability ``purchase``. Event ids and timestamps continue
across calls (one world per ``Traffic``).

Not a script: the throughput scripts import it (this folder is on ``sys.path`` then).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.core.events import CatalogOp, Event

BASE_TS_MS = 1_700_000_000_000


@dataclass(frozen=True)
class Catalog:
    """Item ids and their vectors [n, dim]; the first ``trained`` rows are the model's."""

    ids: list[str]
    vectors: np.ndarray
    trained: int

    def __len__(self) -> int:
        return len(self.ids)

    def ops(self, ts_ms: int = BASE_TS_MS, chunk: int = 10_000) -> Iterator[CatalogOp]:
        """An available upsert with its vector (5 decimals) for every item, in order."""
        for start in range(0, len(self.ids), chunk):
            rows = np.round(self.vectors[start : start + chunk], 5).tolist()
            for offset, row in enumerate(rows):
                yield CatalogOp(self.ids[start + offset], "upsert", True, ts_ms, tuple(row))


def make_catalog(
    trained_ids: Sequence[str], trained_vectors: np.ndarray, n: int, seed: int = 0
) -> Catalog:
    """``n`` items: the trained ones plus catalog items mixed around their vectors."""
    base = np.asarray(trained_vectors, dtype=np.float32)
    n_trained = len(trained_ids)
    extra = max(0, n - n_trained)
    rng = np.random.default_rng(seed)
    p = rng.integers(n_trained, size=extra)
    q = rng.integers(n_trained, size=extra)
    a = rng.uniform(0.6, 1.0, size=(extra, 1)).astype(np.float32)
    sigma = 0.5 * float(base.std(axis=0).mean())
    noise = rng.normal(0.0, sigma, size=(extra, base.shape[1])).astype(np.float32)
    mixed = a * base[p] + (1.0 - a) * base[q] + noise
    ids = list(trained_ids)[: min(n, n_trained)] + [f"c{j}" for j in range(extra)]
    vectors = np.concatenate([base[: min(n, n_trained)], mixed.astype(np.float32)])
    return Catalog(ids=ids, vectors=vectors, trained=min(n, n_trained))


class Traffic:
    """Seeded events over a catalog (module docstring).

    Args:
        catalog: the item ids (popularity order: trained first, then a random order).
        users: number of users (``prefix`` + number).
        zipf_s: the popularity exponent.
        sequential: probability that the next click is the last item's successor.
        purchase: probability that a click is followed by a purchase of the same item.
        seed: random seed.
        prefix: user id prefix (separate groups of users per phase).
    """

    def __init__(
        self,
        catalog: Catalog,
        users: int = 2000,
        zipf_s: float = 1.0,
        sequential: float = 0.5,
        purchase: float = 0.1,
        seed: int = 1,
        prefix: str = "u",
    ) -> None:
        self.rng = np.random.default_rng(seed)
        n = len(catalog)
        tail = catalog.trained + self.rng.permutation(n - catalog.trained)
        self.order = np.concatenate([np.arange(catalog.trained), tail])
        weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** zipf_s
        self.cdf = np.cumsum(weights / weights.sum())
        self.ids = catalog.ids
        # each item's fixed successor: another draw from the popularity
        self.successor = self._draw(n)
        self.users = users
        self.prefix = prefix
        self.sequential = sequential
        self.purchase = purchase
        self.seed = seed
        self.last: dict[int, int] = {}
        self.counter = 0

    def _draw(self, size: int) -> np.ndarray:
        """Item positions (indices into ``ids``) drawn from the popularity."""
        ranks = np.searchsorted(self.cdf, self.rng.random(size), side="right")
        return self.order[np.minimum(ranks, len(self.order) - 1)]

    def distinct_items(self, events: Sequence[Event]) -> int:
        """Distinct items among ``events``."""
        return len({e.item_id for e in events})

    def events(self, n: int, users: Sequence[int] | None = None) -> list[Event]:
        """The next ``n`` events; each from a uniform user, or from ``users`` in turn."""
        out: list[Event] = []
        fresh = self._draw(n)
        coin = self.rng.random(n)
        buy = self.rng.random(n)
        who = self.rng.integers(self.users, size=n) if users is None else None
        cycle = list(users) if users is not None else []
        i = 0
        while len(out) < n:
            u = int(who[i]) if who is not None else cycle[i % len(cycle)]
            last = self.last.get(u)
            item = (
                int(self.successor[last])
                if last is not None and coin[i] < self.sequential
                else int(fresh[i])
            )
            self.last[u] = item
            kinds = ["click", "purchase"] if buy[i] < self.purchase else ["click"]
            for kind in kinds:
                if len(out) < n:
                    out.append(self._event(u, item, kind))
            i += 1
        return out

    def _event(self, u: int, item: int, kind: str) -> Event:
        event = Event(
            event_id=f"b{self.seed}-{self.prefix}-{self.counter}",
            user_id=f"{self.prefix}{u}",
            item_id=self.ids[item],
            type=kind,  # type: ignore[arg-type]
            ts=BASE_TS_MS + 1000 * self.counter,
        )
        self.counter += 1
        return event
