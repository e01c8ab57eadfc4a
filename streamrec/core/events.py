"""The domain's data: events, catalog changes and recommendations (pure, no I/O).

These are the values that flow between the edges (``streamrec.io`` decodes them from and encodes
them to the topics, ``streamrec.state.store`` stores them) and the core (``streamrec.ranking`` ranks
with them). The wire format and its validation live in ``streamrec.io.codec``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

# Interactions enter the user's history (the encoder's input) and the stream state (trending,
# co-visitation) and are answered with a recommendation. Feedback on what was shown (an
# impression of one item of a list, a dismissal of an item) only updates the user's feedback
# state, which ranking reads to demote and filter; it is never answered.
INTERACTION_TYPES = ("click", "purchase")
FEEDBACK_TYPES = ("impression", "dismiss")
EVENT_TYPES = (*INTERACTION_TYPES, *FEEDBACK_TYPES)
CATALOG_OPS = ("upsert", "delete")

EventType = Literal["click", "purchase", "impression", "dismiss"]
REASON_SOURCES = ("ann", "trending", "covisit", "coldstart", "explore")


@dataclass(frozen=True, slots=True)
class Event:
    """A user interaction, or feedback on an item shown to the user.

    Attributes:
        event_id: unique id (the dedupe key).
        user_id: the user.
        item_id: the item clicked, purchased, shown (``impression``: one event per shown item)
            or dismissed.
        type: one of ``EVENT_TYPES``.
        ts: event time, epoch ms.
        rec_id: the recommendation the item was shown in (required for ``impression``,
            optional for ``dismiss``, not read for interactions).
    """

    event_id: str
    user_id: str
    item_id: str
    type: EventType
    ts: int
    rec_id: str | None = None

    @property
    def is_feedback(self) -> bool:
        """True for an impression or a dismissal (no history, no recommendation)."""
        return self.type in FEEDBACK_TYPES


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
        source: why it was recommended: the candidate source that placed it (``ann``: the
            encoder's neighbours of the user, ``trending``, ``covisit``: co-visited with a
            recent history item, ``coldstart``: the encoder's neighbours of the catalog
            centroid, for a user without known history), or ``explore`` (an exploration
            slot); None when reasons are off.
        anchor: for ``covisit``, the history item it was co-visited with (the one that
            contributed most); else None.
    """

    item_id: str
    score: float
    propensity: float = 1.0
    explored: bool = False
    source: str | None = None
    anchor: str | None = None


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The answer to one event."""

    rec_id: str
    user_id: str
    event_id: str
    items: tuple[RecItem, ...]
    model_version: str
    generated_at: int
    arm: str | None = None  # the user's A/B arm (streamrec.ranking.arms); None: no test


def rec_id_for(event_id: str) -> str:
    """Stable recommendation id derived from the event: replays produce the same id."""
    return "rec-" + hashlib.sha256(event_id.encode("utf-8")).hexdigest()[:24]
