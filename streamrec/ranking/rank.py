"""Pure ranking: from scored candidates to the published list.

No I/O, no clock: the worker passes in the candidates from the index, the user's exclusions and
an availability predicate, and gets back the top-k items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from streamrec.core.events import RecItem
from streamrec.core.history import UserState


def exclusions(state: UserState, exclude_history: bool) -> set[str]:
    """Items never to recommend to this user: purchases always, history when configured."""
    out = set(state.purchased)
    if exclude_history:
        out.update(state.history)
    return out


def rank(
    candidates: Iterable[tuple[str, float]],
    k: int,
    exclude: set[str],
    available: Callable[[str], bool],
) -> tuple[RecItem, ...]:
    """Top-k candidates by score, dropping excluded, unavailable and repeated items.

    Args:
        candidates: (item_id, score) pairs in any order; higher score is better.
        k: list length wanted (the result may be shorter when candidates run out).
        exclude: item ids that must not appear.
        available: predicate for items that may be shown.

    Returns:
        Up to k items, best first; ties broken by item id for determinism.
    """
    best: dict[str, float] = {}
    for item_id, score in candidates:
        if item_id in exclude or not available(item_id):
            continue
        if item_id not in best or score > best[item_id]:
            best[item_id] = score
    ordered = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(RecItem(item_id=i, score=round(float(s), 6)) for i, s in ordered[:k])
