"""The one exception tree of streamrec.

::

    StreamrecError            base of everything streamrec raises on purpose
    ├── ConfigError           a setting is missing or invalid (names the setting)
    ├── BadEvent              an input record is invalid; carries a short ``reason`` code
    ├── ModelError            a model directory is missing, inconsistent or fails to load
    ├── StoreError            the database failed or holds something unexpected
    │   ├── FencedError       this worker lost ownership of a partition (stale generation)
    │   └── ConflictError     a batch raced another writer (user version, duplicate key)
    ├── ItemIndexError        the item index rejected an operation
    │   └── SnapshotRejected  an index snapshot is corrupt, of another format or foreign
    └── BrokerError           the Kafka broker cannot be reached or refused a request

Errors on input data never escape the worker: ``BadEvent`` is turned into a dead-letter
record. The others stop or pause the worker with a clear message.

A failed ``Store.commit_batch`` wrote nothing, and its error says what to do next:

- ``FencedError``: only when a partition's guarded offset update matched no row (another
  worker claimed it since): drop the partitions, never retry the batch.
- ``ConflictError``: the batch raced another writer: a user row changed since it was read
  (optimistic version), a "new" user was inserted meanwhile, an event id was applied
  meanwhile (any other integrity error), or the database aborted the transaction as a
  deadlock or serialization failure. The partitions are still ours: re-read (dedupe, users)
  and rebuild the batch from the same records, then commit again.
- any other ``StoreError``: the database failed (unreachable, timeout, out of range); back
  off and re-read from the stored offsets.
"""

from __future__ import annotations


class StreamrecError(Exception):
    """Base class of every error streamrec raises on purpose."""


class ConfigError(StreamrecError):
    """A setting is missing or invalid."""


class BadEvent(StreamrecError):  # noqa: N818 - the name the architecture uses
    """An input record is invalid.

    Attributes:
        reason: short, bounded reason code (used as a metric label and DLQ header).
        detail: human-readable detail; never contains the payload itself.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ModelError(StreamrecError):
    """A model directory is missing, inconsistent or fails to load."""


class StoreError(StreamrecError):
    """The state database failed or holds something unexpected."""


class FencedError(StoreError):
    """This worker's generation for a partition is stale: another worker owns it now."""


class ConflictError(StoreError):
    """The batch raced another writer; re-read and retry it (nothing was written)."""


class ItemIndexError(StreamrecError):
    """The item index rejected an operation."""


class SnapshotRejected(ItemIndexError):  # noqa: N818 - a verdict, not a failure
    """An index snapshot must not be used; ``reason`` is ``corrupt``, ``format`` or ``foreign``
    (a bounded metric label), ``detail`` says what failed."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BrokerError(StreamrecError):
    """The Kafka broker cannot be reached or refused a request."""
