"""What one batch writes, in one transaction: user states, applied events, outbox rows, offsets.

Plain values (no database): the worker's step builds a ``BatchWrite``, ``Store.commit_batch``
writes it, and a replay builds the same values without a database.
"""

from __future__ import annotations

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


@dataclass
class BatchWrite:
    """Everything one batch writes, in one transaction."""

    topic: str
    generations: dict[int, int]
    next_offsets: dict[int, int]
    users: dict[str, UserState] = field(default_factory=dict)
    existing_users: set[str] = field(default_factory=set)
    applied: list[AppliedEvent] = field(default_factory=list)
    messages: list[OutboxMessage] = field(default_factory=list)
