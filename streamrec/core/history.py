"""A user's state and the pure fold of events into it.

The fold is the specification of "apply each event exactly once": fault tests compare the
database with ``fold_events`` over the input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from streamrec.core.events import Event

MAX_PURCHASED = 1000
MAX_DISMISSED = 1000
MAX_IMPRESSED = 200


@dataclass(frozen=True, slots=True)
class UserState:
    """What the worker keeps per user.

    Attributes:
        history: item ids of the most recent clicks and purchases, oldest first (capped).
            Impressions and dismissals never enter it: it is what the encoder reads.
        purchased: item ids the user bought, oldest first (capped at MAX_PURCHASED).
        n_events: clicks and purchases applied in total (not capped; feedback not counted).
        last_ts: event time of the latest applied event of any type (epoch ms).
        dismissed: item ids the user dismissed, oldest first, distinct (capped at
            MAX_DISMISSED, the oldest dismissal forgotten first).
        impressions: ``(item_id, times shown)`` for items shown since the user last clicked
            or bought them, least recently shown first, distinct (capped at MAX_IMPRESSED
            items, the least recently shown forgotten first). A click or a purchase of an
            item, or its dismissal, removes its entry; a dismissed item is not counted.
    """

    history: tuple[str, ...] = ()
    purchased: tuple[str, ...] = ()
    n_events: int = 0
    last_ts: int = 0
    dismissed: tuple[str, ...] = ()
    impressions: tuple[tuple[str, int], ...] = ()

    def impression_counts(self) -> dict[str, int]:
        """Times each item was shown without a click or purchase since."""
        return dict(self.impressions)


EMPTY = UserState()


def apply_event(state: UserState, event: Event, max_len: int) -> UserState:
    """Return the state after one event (events are applied in arrival order)."""
    item = event.item_id
    last_ts = max(state.last_ts, event.ts)
    if event.type == "impression":
        if item in state.dismissed:  # never shown by us again: nothing to demote
            return replace(state, last_ts=last_ts)
        shown = dict(state.impressions).get(item, 0) + 1
        impressions = (*_without(state.impressions, item), (item, shown))[-MAX_IMPRESSED:]
        return replace(state, impressions=impressions, last_ts=last_ts)
    if event.type == "dismiss":
        dismissed = state.dismissed
        if item not in dismissed:
            dismissed = (*dismissed, item)[-MAX_DISMISSED:]
        impressions = _without(state.impressions, item)
        return replace(state, dismissed=dismissed, impressions=impressions, last_ts=last_ts)
    purchased = state.purchased
    if event.type == "purchase" and item not in purchased:
        purchased = ((*purchased, item))[-MAX_PURCHASED:]
    return replace(
        state,
        history=((*state.history, item))[-max_len:],
        purchased=purchased,
        n_events=state.n_events + 1,
        last_ts=last_ts,
        impressions=_without(state.impressions, item),
    )


def _without(impressions: tuple[tuple[str, int], ...], item: str) -> tuple[tuple[str, int], ...]:
    if not any(i == item for i, _ in impressions):
        return impressions
    return tuple(pair for pair in impressions if pair[0] != item)


def fold_events(events: Iterable[Event], max_len: int) -> dict[str, UserState]:
    """Apply each distinct event_id once, in order: the reference for exactly-once state."""
    seen: set[str] = set()
    users: dict[str, UserState] = {}
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        users[event.user_id] = apply_event(users.get(event.user_id, EMPTY), event, max_len)
    return users
