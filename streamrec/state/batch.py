"""What one batch writes, in one transaction: user states, applied events, outbox rows, offsets.

Plain values (no database): the worker's step builds a ``BatchWrite``, ``Store.commit_batch``
writes it, and a replay builds the same values without a database. ``UserStates`` is what a
state reader's ``load_users`` returns: the states, with the row versions the write is guarded
by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streamrec.core.events import Event
from streamrec.core.history import UserState


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message to publish after its batch commits.

    Attributes:
        topic: destination topic.
        partition: source partition of the input record (relay ownership).
        key: record key.
        value: record value.
        headers: record headers.
        event_ts_ms: Kafka timestamp of the input record (for end-to-end latency).
        id: database id, set once stored.
    """

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    event_ts_ms: int = 0
    id: int | None = None


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    """An event a batch applies, with its position in the input topic.

    Attributes:
        event: the event.
        partition: its input partition.
        offset: its offset in that partition.
    """

    event: Event
    partition: int
    offset: int


class UserStates(dict[str, UserState]):
    """Users' states as read, with the version of each row read (a plain dict otherwise).

    ``Store.load_users`` returns one; ``versions`` maps every user in it to the version of
    its row when read, which ``BatchWrite.user_versions`` carries to the guarded update.
    """

    def __init__(
        self,
        states: Mapping[str, UserState] | None = None,
        versions: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(states or {})
        self.versions: dict[str, int] = dict(versions or {})


def read_versions(states: Mapping[str, UserState]) -> dict[str, int]:
    """The row versions read with ``states``: those of a ``UserStates``, else none."""
    return dict(states.versions) if isinstance(states, UserStates) else {}


@dataclass
class BatchWrite:
    """Everything one batch writes, in one transaction.

    Attributes:
        topic: the events topic.
        generations: partition -> the generation this worker claimed (the fence).
        next_offsets: partition -> the offset after the batch's last record.
        users: the users' new states.
        existing_users: the users that had a row when read (the keys of ``user_versions``;
            kept for callers that only need to know which users existed).
        user_versions: user -> the version of its row when read. ``Store.commit_batch``
            updates exactly these users, each only if its row still has that version, and
            inserts the others as new; a row changed or inserted since the read fails the
            batch with ``ConflictError``. Every user in ``existing_users`` must be here.
        applied: the events applied, with their positions.
        messages: the outbox rows (recommendations, dead letters).
    """

    topic: str
    generations: dict[int, int]
    next_offsets: dict[int, int]
    users: dict[str, UserState] = field(default_factory=dict)
    existing_users: set[str] = field(default_factory=set)
    applied: list[AppliedEvent] = field(default_factory=list)
    messages: list[OutboxMessage] = field(default_factory=list)
    user_versions: dict[str, int] = field(default_factory=dict)
