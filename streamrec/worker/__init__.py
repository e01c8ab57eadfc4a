"""The worker: wires io, state and ranking into the run loop.

- ``step``: ``Pipeline``, one batch from records to a ``BatchWrite`` (pure given a reader).
- ``loop``: ``Worker``, the run loop and its numbered steps.
- ``partitions``: claiming partitions (generations, offsets, stream-state restore).
- ``relay``: publishing the outbox; ``health``: broker and database readiness.
- ``catalog``: following the catalog topic into the item index.
- ``serving``: loading the model directory into an encoder, an index and a ranker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamrec.worker.loop import Worker

__all__ = ["Worker"]


def __getattr__(name: str) -> Any:
    # lazy: importing the pure batch step (replay does) must not pull in kafka-python
    if name == "Worker":
        from streamrec.worker.loop import Worker

        return Worker
    raise AttributeError(f"module 'streamrec.worker' has no attribute {name!r}")
