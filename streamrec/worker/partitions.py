"""Partition ownership: which partitions this worker owns, under which generation.

The group assigns partitions; the worker owns one only once it has *claimed* it in the database
(``Store.claim_partitions`` bumps the partition's generation, which fences a previous owner's
late commit, and returns the stored next offset, where the consumer seeks). New partitions stay
paused until claimed and, with fused ranking, until their stream state (trending,
co-visitation) has been restored from their latest applied events, a slice per loop iteration
(``streamrec.state.restore``): per user, live events come after restored ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from streamrec.state.restore import StateRestore
from streamrec.state.store import Store

log = logging.getLogger(__name__)


class Partitions:
    """The partitions of the events topic this worker owns.

    Args:
        topic: the events topic.
        store: where generations and offsets are claimed.
        state_restore: the stream-state restore (None: nothing to restore).

    Attributes:
        generations: partition -> generation, for owned (claimed) partitions.
        unclaimed: assigned by the group, not yet claimed (paused).
    """

    def __init__(self, topic: str, store: Store, state_restore: StateRestore | None) -> None:
        self.topic = topic
        self.store = store
        self.state_restore = state_restore
        self.generations: dict[int, int] = {}
        self.unclaimed: set[TopicPartition] = set()

    def assigned(self, consumer: KafkaConsumer, assigned: Iterable[TopicPartition]) -> None:
        """Pause newly assigned partitions until ``claim`` (and the restore) let them go."""
        tps = list(assigned)
        if tps:
            consumer.pause(*tps)
            self.unclaimed.update(tps)

    def revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Forget revoked partitions; the loop is between batches when this runs."""
        tps = list(revoked)
        for tp in tps:
            self.generations.pop(tp.partition, None)
            self.unclaimed.discard(tp)
        if self.state_restore is not None:
            self.state_restore.discard(tp.partition for tp in tps)

    def drop(self, partitions: Iterable[int]) -> None:
        """Stop owning ``partitions`` (their batch was fenced: another worker owns them)."""
        for p in partitions:
            self.generations.pop(p, None)

    def claim(self, consumer: KafkaConsumer) -> None:
        """Claim the unclaimed partitions and seek to their stored offsets.

        They stay paused; the caller resumes the owned ones that are not ``restoring`` (a
        stream-state restore is due for every claimed partition: ``restore_some`` releases
        them).
        """
        claimed = self.store.claim_partitions(self.topic, [tp.partition for tp in self.unclaimed])
        for tp in list(self.unclaimed):
            generation, next_offset = claimed[tp.partition]
            self.generations[tp.partition] = generation
            if next_offset is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, next_offset)
        log.info("claimed partitions %s", sorted(claimed))
        self.unclaimed.clear()
        if self.state_restore is not None:
            # paused until all are restored: per user, live events come after restored ones
            self.state_restore.add(list(claimed))

    def restore_some(self, consumer: KafkaConsumer) -> None:
        """A slice of the pending stream-state restores; resume the partitions once all are."""
        if self.state_restore is None or not self.state_restore.pending:
            return
        finished = self.state_restore.step()
        owned = [TopicPartition(self.topic, p) for p in finished if p in self.generations]
        if owned:
            consumer.resume(*owned)

    def restoring(self) -> set[TopicPartition]:
        """Partitions whose stream state is still being restored (kept paused)."""
        pending = self.state_restore.pending if self.state_restore is not None else set()
        return {TopicPartition(self.topic, p) for p in pending}

    def owns(self, tp: TopicPartition) -> bool:
        """True when records of ``tp`` may be processed (claimed, not waiting for a claim)."""
        return tp.partition in self.generations and tp not in self.unclaimed
