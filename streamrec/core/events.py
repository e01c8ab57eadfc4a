"""The domain's data: events, catalog changes and recommendations (pure, no I/O).

These are the values that flow between the edges (``streamrec.io`` decodes them from and encodes
them to the topics, ``streamrec.state.store`` stores them) and the core (``streamrec.ranking`` ranks
with them). The wire format and its validation live in ``streamrec.io.codec``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

EVENT_TYPES = ("click", "purchase")
CATALOG_OPS = ("upsert", "delete")


@dataclass(frozen=True, slots=True)
class Event:
    """A user interaction."""

    event_id: str
    user_id: str
    item_id: str
    type: Literal["click", "purchase"]
    ts: int


@dataclass(frozen=True, slots=True)
class CatalogOp:
    """A catalog change: add, update or remove an item."""

    item_id: str
    op: Literal["upsert", "delete"]
    available: bool
    ts: int
    vector: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class RecItem:
    """One recommended item.

    Attributes:
        item_id: the item.
        score: the ranking score (higher is better; comparable within one list only).
        propensity: probability the policy had of showing this item in this slot (1.0 when
            the slot was not subject to exploration).
        explored: True when the slot was filled by the exploration policy.
    """

    item_id: str
    score: float
    propensity: float = 1.0
    explored: bool = False


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The answer to one event."""

    rec_id: str
    user_id: str
    event_id: str
    items: tuple[RecItem, ...]
    model_version: str
    generated_at: int


def rec_id_for(event_id: str) -> str:
    """Stable recommendation id derived from the event: replays produce the same id."""
    return "rec-" + hashlib.sha256(event_id.encode("utf-8")).hexdigest()[:24]
