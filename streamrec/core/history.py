"""A user's state and the pure fold of events into it.

The fold is the specification of "apply each event exactly once": fault tests compare the
database with ``fold_events`` over the input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streamrec.core.events import Event

MAX_PURCHASED = 1000


@dataclass(frozen=True, slots=True)
class UserState:
    """What the worker keeps per user.

    Attributes:
        history: item ids of the most recent events, oldest first (capped).
        purchased: item ids the user bought, oldest first (capped at MAX_PURCHASED).
        n_events: events applied in total (not capped).
        last_ts: event time of the latest applied event (epoch ms).
    """

    history: tuple[str, ...] = ()
    purchased: tuple[str, ...] = ()
    n_events: int = 0
    last_ts: int = 0


EMPTY = UserState()


def apply_event(state: UserState, event: Event, max_len: int) -> UserState:
    """Return the state after one event (events are applied in arrival order)."""
    history = ((*state.history, event.item_id))[-max_len:]
    purchased = state.purchased
    if event.type == "purchase" and event.item_id not in purchased:
        purchased = ((*purchased, event.item_id))[-MAX_PURCHASED:]
    return UserState(
        history=history,
        purchased=purchased,
        n_events=state.n_events + 1,
        last_ts=max(state.last_ts, event.ts),
    )


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
