"""An in-memory state reader: the store reads a batch step needs, from dicts.

Replay (``streamrec.evaluation.replay``) and tests run the worker's batch step against it
instead of a database.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamrec.core.history import UserState
from streamrec.state.batch import UserStates


class MemoryStateReader:
    """Store reads from dicts (users, their row versions and applied event ids)."""

    def __init__(self) -> None:
        self.users: dict[str, UserState] = {}
        self.applied_ids: set[str] = set()
        self.versions: dict[str, int] = {}  # a user absent here reads as version 0

    def applied(self, event_ids: Sequence[str]) -> set[str]:
        """Applied ids among these."""
        return {e for e in event_ids if e in self.applied_ids}

    def load_users(self, user_ids: Sequence[str]) -> UserStates:
        """Known users among these, with their versions."""
        known = {u: self.users[u] for u in user_ids if u in self.users}
        return UserStates(known, {u: self.versions.get(u, 0) for u in known})
