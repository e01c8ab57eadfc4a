"""A/B arms: a stable assignment of users to ranking policies (pure).

A user belongs to one arm for as long as the arms and the salt stay the same: the arm is read
from ``sha256(salt, user_id)`` as a point of [0, 1) and the arms' cumulative weights, so every
worker, every restart and every replay assigns the same arm without any state. Changing the
salt reshuffles every user (a new experiment); adding an arm or changing weights moves only
the users whose point falls in a moved interval.

An arm is a ``RankingConfig`` with some fields replaced (``ARM_FIELDS``); every arm ranks from
the same stream state (trending, co-visitation), which ``Ranker.with_config`` shares.
"""

from __future__ import annotations

import dataclasses
import hashlib
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate

from streamrec.ranking.ranker import RankingConfig

# the RankingConfig fields an arm may change (the names of the Settings fields too)
ARM_FIELDS = ("weight_ann", "weight_trending", "weight_covisit", "explore_rate")
# the settings of the batch step an arm may change (impression demotion is computed there)
STEP_FIELDS = ("impression_demote_strength",)


@dataclass(frozen=True)
class Arm:
    """One arm: its name (a metric label and the output's ``arm``), its share of users
    (relative weight) and the ranking fields it changes."""

    name: str
    weight: float = 1.0
    overrides: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def config(self, base: RankingConfig) -> RankingConfig:
        """``base`` with this arm's overrides."""
        unknown = set(self.overrides) - set(ARM_FIELDS) - set(STEP_FIELDS)
        if unknown:
            raise ValueError(f"arm {self.name}: cannot override {sorted(unknown)}")
        ranking = {k: v for k, v in self.overrides.items() if k in ARM_FIELDS}
        return dataclasses.replace(base, **ranking)  # type: ignore[arg-type]


class Assignment:
    """Users to arms by a stable hash of the salt and the user id."""

    def __init__(self, arms: Sequence[Arm], salt: str) -> None:
        if len(arms) < 2 or len({a.name for a in arms}) != len(arms):
            raise ValueError("an experiment needs two or more arms with distinct names")
        if any(not a.weight > 0 for a in arms):
            raise ValueError("arm weights must be > 0")
        total = sum(a.weight for a in arms)
        self.arms = tuple(arms)
        self.names = tuple(a.name for a in arms)
        self._bounds = [w / total for w in accumulate(a.weight for a in arms)][:-1]
        self._salt = salt.encode("utf-8") + b"\x00"

    def point(self, user_id: str) -> float:
        """The user's point of [0, 1): the first 8 bytes of sha256(salt NUL user_id)."""
        digest = hashlib.sha256(self._salt + user_id.encode("utf-8", "surrogatepass")).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def arm_of(self, user_id: str) -> str:
        """The user's arm."""
        return self.names[bisect_right(self._bounds, self.point(user_id))]
