"""Following the catalog topic into the item index.

Every worker needs the whole catalog, so the catalog is read outside the consumer group: all
partitions assigned, from the beginning at every start (treat the topic as compacted by
item_id), or from the offsets an index snapshot covers (``start_offsets``; partitions it does
not name from the beginning). Offsets outside a partition's current range (the topic was
recreated, or retention removed records the snapshot never saw) refuse the snapshot:
``resumed`` is False and the follower reads from the beginning; the worker then rebuilds its
index. Upserts add or update items (searchable when applied); deletes hide them.

The index counts as refreshed (``streamrec_index_refresh_age_seconds`` starts again from 0)
only when the follower has proof that it holds the whole catalog: a poll returned records, or
a check of the topic's end offsets (every ``CHECK_INTERVAL_S``, bounded by
``CHECK_TIMEOUT_MS``) found it at the end. With the catalog's broker unreachable the age
grows, and its alert can fire.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kafka.structs import TopicPartition

from streamrec.core.events import CatalogOp
from streamrec.errors import BadEvent, ItemIndexError
from streamrec.io.clients import make_consumer
from streamrec.io.codec import dead_letter_headers, decode_catalog
from streamrec.ops.metrics import Metrics
from streamrec.ops.settings import Settings
from streamrec.ranking.index import ItemIndex
from streamrec.state.batch import OutboxMessage

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 5.0
CHECK_TIMEOUT_MS = 1000


def apply_catalog_op(index: ItemIndex, op: CatalogOp) -> None:
    """Apply one catalog record to the index."""
    if op.op == "delete":
        index.remove(op.item_id)
    else:
        index.upsert(op.item_id, op.vector, op.available)


class CatalogFollower:
    """Reads the catalog topic and applies it to the index; bad records go to the DLQ.

    Args:
        settings: topics and limits.
        index: the index the catalog is applied to.
        metrics: counts updates and dead letters.
        dead_letter: hands a dead letter to the outbox relay (never blocks).
        on_op: called with each op once the index applied it (the fused ranker's
            ``observe_catalog``: content features and new-item bookkeeping).
        on_fresh: called whenever the index is proven to hold the whole catalog (module
            docstring; the worker's index refresh age).
        start_offsets: per partition, the next offset to read (an index snapshot's coverage;
            None: from the beginning).
    """

    def __init__(
        self,
        settings: Settings,
        index: ItemIndex,
        metrics: Metrics,
        dead_letter: Callable[[OutboxMessage], None],
        on_op: Callable[[CatalogOp], None] | None = None,
        on_fresh: Callable[[], None] = lambda: None,
        start_offsets: Mapping[int, int] | None = None,
    ) -> None:
        self.settings = settings
        self.index = index
        self.on_op = on_op
        self.on_fresh = on_fresh
        self.metrics = metrics
        self.dead_letter = dead_letter
        self.consumer = make_consumer(settings, group=False)
        self.resumed = False  # True when reading from ``start_offsets``
        self.partitions = self._assign(start_offsets)
        self._check_due = 0.0

    def use_index(self, index: ItemIndex, on_op: Callable[[CatalogOp], None] | None) -> None:
        """Apply the following records to another index (a model reload swapped it in)."""
        self.index = index
        self.on_op = on_op

    def _assign(self, start_offsets: Mapping[int, int] | None) -> list[TopicPartition]:
        topic = self.settings.items_topic
        deadline = time.monotonic() + 10
        parts = self.consumer.partitions_for_topic(topic)
        while not parts and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = self.consumer.partitions_for_topic(topic)
        if not parts:
            log.warning("catalog topic %s not found; serving the model's items only", topic)
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        if start_offsets is not None:
            self.resumed = self._seek_to(tps, start_offsets)
        if not self.resumed:
            self.consumer.seek_to_beginning(*tps)
        return tps

    def _seek_to(self, tps: list[TopicPartition], offsets: Mapping[int, int]) -> bool:
        """Seek to ``offsets`` if each lies within its partition's current range."""
        firsts = self.consumer.beginning_offsets(tps)
        ends = self.consumer.end_offsets(tps)
        known = {tp.partition for tp in tps}
        for tp in tps:
            offset = offsets.get(tp.partition, firsts[tp])
            if not firsts[tp] <= offset <= ends[tp]:
                log.warning(
                    "catalog partition %d: snapshot offset %d outside [%d, %d]",
                    tp.partition,
                    offset,
                    firsts[tp],
                    ends[tp],
                )
                return False
        if set(offsets) - known:
            log.warning("catalog partitions %s are gone", sorted(set(offsets) - known))
            return False
        for tp in tps:
            self.consumer.seek(tp, offsets.get(tp.partition, firsts[tp]))
        return True

    def positions(self) -> dict[int, int]:
        """The next offset of each partition: the index holds every record before it."""
        return {
            tp.partition: int(self.consumer.position(tp, timeout_ms=CHECK_TIMEOUT_MS))
            for tp in self.partitions
        }

    def catch_up(self, timeout_s: float = 30.0) -> int:
        """Apply the catalog up to its current end before serving; returns records applied."""
        if not self.partitions:
            return 0
        ends = self.consumer.end_offsets(self.partitions)
        applied = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.consumer.position(tp) >= ends[tp] for tp in self.partitions):
                break
            applied += self.poll(timeout_ms=200)
        log.info("catalog applied: %d records, %d items searchable", applied, self.index.size)
        return applied

    def poll(self, timeout_ms: int = 0) -> int:
        """Apply the catalog records available now, at most ``catalog_batch_max_records``."""
        if not self.partitions:
            self.on_fresh()  # no catalog topic: the model's items are the whole catalog
            return 0
        n = 0
        limit = self.settings.catalog_batch_max_records
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=limit)
        for batch in polled.values():
            for rec in batch:
                n += 1
                try:
                    op = decode_catalog(
                        rec.value, rec.key, self.settings.max_event_bytes, self.settings.max_id_len
                    )
                    apply_catalog_op(self.index, op)
                    self.metrics.catalog_updates.labels(op=op.op).inc()
                    if self.on_op is not None:
                        self.on_op(op)
                except BadEvent as bad:
                    self._dead_letter(rec, bad.reason, bad.detail)
                except ItemIndexError as exc:
                    self._dead_letter(rec, "bad_vector", str(exc))
        if n:
            self.on_fresh()
        else:
            self._check_fresh()
        return n

    def _check_fresh(self) -> None:
        """Every ``CHECK_INTERVAL_S``: at the end of every partition means fresh."""
        now = time.monotonic()
        if now < self._check_due:
            return
        self._check_due = now + CHECK_INTERVAL_S
        try:
            ends = self.consumer.end_offsets(self.partitions, timeout_ms=CHECK_TIMEOUT_MS)
            at_end = all(
                self.consumer.position(tp, timeout_ms=CHECK_TIMEOUT_MS) >= ends[tp]
                for tp in self.partitions
            )
        except Exception as exc:  # an unreachable broker: not fresh; the age grows
            log.debug("catalog freshness not checked: %s", type(exc).__name__)
            return
        if at_end:
            self.on_fresh()

    def _dead_letter(self, rec: Any, reason: str, detail: str) -> None:
        headers = dead_letter_headers(reason, detail, rec.topic, rec.partition, rec.offset)
        self.dead_letter(
            OutboxMessage(
                topic=self.settings.dlq_topic,
                partition=rec.partition,
                key=rec.key,
                value=rec.value,
                headers=headers,
            )
        )

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close(autocommit=False)
