"""Pure ranking: from scored candidates to the published list.

No I/O, no clock: the worker passes in the candidates from the index, the user's exclusions and
an availability predicate, and gets back the top-k items.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from streamrec.core.events import RecItem
from streamrec.core.history import UserState


def exclusions(state: UserState, exclude_history: bool) -> set[str]:
    """Items never to recommend to this user: purchases and dismissals always, history when
    configured."""
    out = set(state.purchased)
    out.update(state.dismissed)
    if exclude_history:
        out.update(state.history)
    return out


def demotions(state: UserState, after: int, strength: float) -> dict[str, float]:
    """Score multipliers of the items shown ``after`` times or more without a click since.

    An item shown ``n >= after`` times gets ``exp(-strength * (n - after + 1))``: each further
    show without a click decays it again. ``strength <= 0`` demotes nothing.
    """
    if strength <= 0 or not state.impressions:
        return {}
    return {
        item: math.exp(-strength * (shown - after + 1))
        for item, shown in state.impressions
        if shown >= after
    }


def rank(
    candidates: Iterable[tuple[str, float]],
    k: int,
    exclude: set[str],
    available: Callable[[str], bool],
    demote: Mapping[str, float] | None = None,
) -> tuple[RecItem, ...]:
    """Top-k candidates by score, dropping excluded, unavailable and repeated items.

    Args:
        candidates: (item_id, score) pairs in any order; higher score is better.
        k: list length wanted (the result may be shorter when candidates run out).
        exclude: item ids that must not appear.
        available: predicate for items that may be shown.
        demote: per item, a multiplier in (0, 1] of its score above the lowest candidate
            score (``demotions``): scores of any sign are demoted, never promoted.

    Returns:
        Up to k items, best first; ties broken by item id for determinism.
    """
    best: dict[str, float] = {}
    for item_id, score in candidates:
        if item_id in exclude or not available(item_id):
            continue
        if item_id not in best or score > best[item_id]:
            best[item_id] = score
    if demote and best:
        low = min(best.values())
        for item_id, factor in demote.items():
            if item_id in best:
                best[item_id] = low + (best[item_id] - low) * factor
    ordered = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(RecItem(item_id=i, score=round(float(s), 6)) for i, s in ordered[:k])
