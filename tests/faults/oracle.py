"""The exactly-once oracle of the fault tests, written independently of the production fold.

A few lines of plain Python over the input events, sharing no code with ``streamrec.core``'s
``fold_events``/``apply_event`` (a bug there must not hide in the oracle too): per user, each
distinct ``event_id`` counted once, the items in input order, the purchases, the latest time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Expected:
    """What one user's row must hold after every distinct event was applied once."""

    n_events: int = 0
    items: list[str] = field(default_factory=list)  # every applied item, input order
    purchased: set[str] = field(default_factory=set)
    last_ts: int = 0


def expected_users(events: Iterable[Any]) -> dict[str, Expected]:
    """Per user, the effects of the distinct events (first occurrence of an event_id wins)."""
    seen: set[str] = set()
    users: dict[str, Expected] = {}
    for e in events:
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        u = users.setdefault(e.user_id, Expected())
        u.n_events += 1
        u.items.append(e.item_id)
        if e.type == "purchase":
            u.purchased.add(e.item_id)
        u.last_ts = max(u.last_ts, e.ts)
    return users


def differences(
    expected: Mapping[str, Expected], got: Mapping[str, Any], history_max_len: int, ordered: bool
) -> list[str]:
    """Human-readable differences between the database rows and the oracle (empty: equal).

    ``ordered``: each user's events arrived in input order (one partition per user), so the
    history must be exactly the last ``history_max_len`` items; otherwise (a user spread over
    partitions) only the multiset is defined, and only while the history is not capped.
    """
    out: list[str] = []
    for user in sorted(set(got) - set(expected)):
        out.append(f"{user}: in the database but not in the input")
    for user, want in sorted(expected.items()):
        row = got.get(user)
        if row is None:
            out.append(f"{user}: missing ({want.n_events} events)")
            continue
        if row.n_events != want.n_events:
            out.append(f"{user}: {row.n_events} events applied, {want.n_events} expected")
        if set(row.purchased) != want.purchased or len(row.purchased) != len(want.purchased):
            out.append(f"{user}: purchases differ")
        if row.last_ts != want.last_ts:
            out.append(f"{user}: last_ts {row.last_ts}, expected {want.last_ts}")
        if ordered:
            if list(row.history) != want.items[-history_max_len:]:
                out.append(f"{user}: history differs")
        elif len(want.items) <= history_max_len and Counter(row.history) != Counter(want.items):
            out.append(f"{user}: history (as a multiset) differs")
    return out


def lost_and_duplicated(
    expected: Mapping[str, Expected], got: Mapping[str, Any]
) -> tuple[int, int]:
    """Events missing from, and counted twice in, the database's per-user event counts."""
    lost = dup = 0
    for user in set(expected) | set(got):
        want = expected[user].n_events if user in expected else 0
        have = got[user].n_events if user in got else 0
        lost += max(0, want - have)
        dup += max(0, have - want)
    return lost, dup
