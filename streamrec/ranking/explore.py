"""Exploration with logged propensities: an epsilon policy over slots (pure, seeded).

The policy, for a list of ``k`` slots given the exploit ranking (best first) and an exploration
pool (candidates from *outside* the exploit top-k, already filtered):

1. each slot independently is an exploration slot with probability ``epsilon``;
2. exploit slots take the exploit ranking in order;
3. exploration slots take items drawn uniformly, without replacement, from the pool.

A pool is any ``ExplorePool``: its size and a uniform draw. ``ListPool`` wraps a ranked list
(e.g. candidates beyond the top-k); ``streamrec.ranking.ranker`` also samples the whole live catalog
through the index without materialising it (rejection sampling keeps the draw uniform).

Because the draws are that simple, the probability the policy had of showing an item in a
slot is exact and cheap (slots numbered from 0; ``r`` = the item's exploit rank from 0;
``m`` = pool size)::

    exploit item at slot s:  C(s, r) * (1 - eps) ** (r + 1) * eps ** (s - r)     (r <= s)
    pool item at slot s:     eps / m

(the pool item is shown at slot s iff slot s explores and the uniform draw there picks it; for
a uniform draw without replacement every draw position is equally likely, 1/m). For every slot
the propensities over all items sum to 1. When the exploit ranking has fewer than ``k`` items
or the pool fewer than ``k``, the request is served without exploration (every propensity 1).

Randomness comes from a generator seeded by (policy seed, request key), so a request gets the
same list whenever it is replayed, and tests are deterministic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import comb
from typing import Protocol

import numpy as np

from streamrec.ranking.fusion import Fused


@dataclass(frozen=True, slots=True)
class ShownItem:
    """One item of a published list, with what a subscriber needs to log it.

    Attributes:
        item_id: the item.
        score: its fused score (higher is better).
        propensity: the probability the policy had of showing this item in this slot.
        explored: True when the slot was an exploration slot.
        source: the candidate source that contributed most (``ann``, ``trending``, ...).
        anchor: for ``covisit``, the history item it was co-visited with (set by the ranker).
    """

    item_id: str
    score: float
    propensity: float
    explored: bool
    source: str
    anchor: str | None = None


class ExplorePool(Protocol):
    """Exploration candidates: disjoint from the exploit top-k and already filtered."""

    def __len__(self) -> int: ...

    def draw(self, rng: np.random.Generator, n: int) -> list[Fused]:
        """``n`` distinct items drawn uniformly without replacement (``n <= len(self)``)."""
        ...


@dataclass(frozen=True, slots=True)
class ListPool:
    """A pool over an explicit list of candidates."""

    items: Sequence[Fused]

    def __len__(self) -> int:
        return len(self.items)

    def draw(self, rng: np.random.Generator, n: int) -> list[Fused]:
        """``n`` distinct items, uniformly without replacement."""
        return [self.items[int(i)] for i in rng.permutation(len(self.items))[:n]]


@lru_cache(maxsize=4096)  # a few (slot, rank) pairs per list length and rate: every list asks
def exploit_propensity(slot: int, rank: int, epsilon: float) -> float:
    """Probability that the exploit item of rank ``rank`` lands in ``slot`` (both from 0)."""
    if rank > slot or rank < 0:
        return 0.0
    return comb(slot, rank) * (1.0 - epsilon) ** (rank + 1) * epsilon ** (slot - rank)


def explore_propensity(epsilon: float, pool_size: int) -> float:
    """Probability that one given pool item lands in one given slot."""
    return epsilon / pool_size if pool_size > 0 else 0.0


def request_rng(seed: int, key: str) -> np.random.Generator:
    """A generator determined by the policy seed and a request key (e.g. user and event)."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))


def explores(
    exploit: Sequence[Fused], pool: Sequence[Fused] | ExplorePool, k: int, epsilon: float
) -> bool:
    """Whether a request with these candidates is served with exploration."""
    return epsilon > 0 and len(exploit) >= k and len(pool) >= k


def epsilon_slots(
    exploit: Sequence[Fused],
    pool: Sequence[Fused] | ExplorePool,
    k: int,
    epsilon: float,
    rng: np.random.Generator,
) -> list[ShownItem]:
    """Fill ``k`` slots by the epsilon policy (module docstring).

    Args:
        exploit: the exploit ranking, best first (at least ``k`` items to explore at all).
        pool: exploration candidates (a list or an ``ExplorePool``), disjoint from
            ``exploit[:k]`` and already filtered.
        k: slots to fill.
        epsilon: probability that a slot explores, in [0, 1).
        rng: the request's generator (``request_rng``).
    """
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
    if not explores(exploit, pool, k, epsilon):
        return [ShownItem(f.item_id, f.score, 1.0, False, f.source) for f in exploit[:k]]
    flips = rng.random(k) < epsilon
    source = _as_pool(pool)
    drawn = iter(source.draw(rng, int(flips.sum())))
    p_explore = explore_propensity(epsilon, len(source))
    shown: list[ShownItem] = []
    rank = 0
    for slot in range(k):
        if flips[slot]:
            f = next(drawn)
            p = p_explore
            shown.append(ShownItem(f.item_id, f.score, p, True, f.source))
        else:
            f = exploit[rank]
            p = exploit_propensity(slot, rank, epsilon)
            shown.append(ShownItem(f.item_id, f.score, p, False, f.source))
            rank += 1
    return shown


def _as_pool(pool: Sequence[Fused] | ExplorePool) -> ExplorePool:
    return ListPool(pool) if isinstance(pool, Sequence) else pool
