"""The run loop. One batch, in numbered steps:

1. poll the catalog (non-blocking) and apply it to the index;
2. poll a batch of events (partitions we have claimed only);
3. decode, dedupe, fold, encode, search, rank (``Pipeline.process``);
4. commit users + applied ids + outbox + next offsets in ONE database transaction,
   fenced by the partitions' generations;
5. publish the outbox (recommendations and dead letters), wait for acks, clear those rows;
6. commit the offsets to Kafka too (for lag monitoring only; the database is the truth).

A crash anywhere before 4 loses nothing (the batch is re-read from the stored offsets); a crash
between 4 and 5 re-publishes from the outbox on restart (same ``rec_id``: at-least-once output,
exactly-once state). Signals only set the stop flag: the loop finishes its batch and exits.

Claimed partitions stay paused until the fused ranker's stream state (trending,
co-visitation) has been restored from their latest applied events in the database, a slice per
loop iteration (``streamrec.state.restore``); the ranker counts each partition offset once, so a
batch re-read after a failed commit is not counted twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError
from kafka.structs import OffsetAndMetadata, TopicPartition

from streamrec.errors import FencedError, StoreError
from streamrec.io.clients import broker_connected, make_consumer, make_producer
from streamrec.ops.http import OpsServer
from streamrec.ops.metrics import Metrics
from streamrec.ops.settings import Settings
from streamrec.ranking.encoder import Encoder, OnnxEncoder
from streamrec.ranking.index import ItemIndex
from streamrec.ranking.modelfiles import ModelFiles, read_model_dir
from streamrec.ranking.ranker import Ranker, RankingConfig
from streamrec.state.restore import make_state_restore
from streamrec.state.store import BatchWrite, OutboxMessage, Store
from streamrec.worker.catalog import CatalogFollower
from streamrec.worker.step import Pipeline, Record

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 5.0


def before_commit(write: BatchWrite) -> None:
    """Called just before the database commit (step 4); does nothing.

    A fault-injection point: the fault tests freeze the worker here (a zombie) to prove that
    its late commit is fenced once its partitions have moved.
    """


def after_commit(stored: Sequence[OutboxMessage]) -> None:
    """Called between the database commit (step 4) and the publish (step 5); does nothing.

    A fault-injection point: the fault tests' launcher replaces it to crash the worker
    exactly there and prove that the outbox relay publishes what was committed.
    """


@dataclass
class ServingModel:
    """What the worker serves: files, encoder, index."""

    files: ModelFiles
    encoder: Encoder
    index: ItemIndex


def load_serving_model(settings: Settings, int8: bool = False) -> ServingModel:
    """Load the model directory, the ONNX encoder and build the HNSW index."""
    files = read_model_dir(settings.model_dir)
    encoder = OnnxEncoder(
        files.encoder_path(int8), files.meta.dim, files.meta.max_len, settings.encoder_threads
    )
    index = ItemIndex(
        files.item_ids,
        files.item_vectors,
        m=settings.hnsw_m,
        ef_construction=settings.hnsw_ef_construction,
        ef_search=settings.hnsw_ef_search,
    )
    return ServingModel(files=files, encoder=encoder, index=index)


def make_ranker(settings: Settings, model: ServingModel) -> Ranker | None:
    """The fused ranker of the settings (None: encoder neighbours only)."""
    if settings.ranking == "encoder":
        return None
    config = RankingConfig.from_settings(settings)
    return Ranker(model.encoder, model.index, config, trained=model.files.item_ids)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.worker.on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker.on_assigned(list(assigned))


class Worker:
    """Consumes events, keeps state, publishes recommendations.

    Args:
        settings: the frozen settings.
        metrics: metrics object (a fresh registry by default).
        model: a loaded model (loaded from ``settings.model_dir`` by default).
        clock: seconds since the epoch.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None = None,
        model: ServingModel | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(clock=clock)
        self.clock = clock
        start = time.perf_counter()
        self.model = model or load_serving_model(settings)
        self.metrics.model_load_seconds.set(time.perf_counter() - start)
        meta = self.model.files.meta
        self.metrics.model_info.info(
            {"version": meta.version, "dim": str(meta.dim), "max_len": str(meta.max_len)}
        )
        self.pipeline = Pipeline(
            settings,
            self.model.encoder,
            self.model.index,
            meta.version,
            clock,
            max_future_ms=settings.max_event_future_ms,
            max_age_ms=settings.max_event_age_ms or None,
            ranker=make_ranker(settings, self.model),
            trained=self.model.files.item_ids,
        )
        self.metrics.bind_index(lambda: self.model.index)
        ranker = self.pipeline.ranker
        if ranker is not None:
            self.metrics.bind_new_items(lambda: ranker.new_items.searchable)
        self.store = Store(settings.db_url, settings.group_id)
        self.state_restore = make_state_restore(
            settings, self.store, self.pipeline.ranker, self.metrics.stream_state_restored.inc
        )
        self.generations: dict[int, int] = {}
        self._unclaimed: set[TopicPartition] = set()
        self._paused_for_store = False
        self._retry_at = 0.0
        self._backoff_s = 0.5
        self._db_ok = True
        self._broker_ok = True
        self._broker_lost_at: float | None = None
        self._broker_failed_at = 0.0
        self._acks_waiting_since: float | None = None  # set while a publish waits for acks
        self._relay_at: float | None = None  # when to retry publishing left-over outbox rows
        self._relay_backoff_s = 0.5
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None
        self.catalog: CatalogFollower | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def run(
        self, stop: threading.Event, on_ready: Callable[[OpsServer | None], None] | None = None
    ) -> None:
        """Run until ``stop`` is set; then finish the batch, publish, commit and close."""
        self.store.migrate()
        server = None
        if self.settings.metrics_port or on_ready is not None:
            server = OpsServer(
                self.settings.metrics_host,
                self.settings.metrics_port,
                self.metrics.registry,
                self.ready,
            )
            server.__enter__()
        try:
            self._open_clients()
            if on_ready is not None:
                on_ready(server)
            log.info(
                "worker started: model %s, db %s",
                self.model.files.meta.version,
                self.settings.safe_db_url(),
            )
            while not stop.is_set():
                self.step()
            log.info("stopping: draining")
            self._relay_outbox(self.settings.drain_timeout_ms / 1000)
        finally:
            self._close_clients()
            if server is not None:
                server.__exit__(None, None, None)
            self.store.close()
            log.info("worker stopped")

    def _open_clients(self) -> None:
        self.producer = make_producer(self.settings)
        rec = self.pipeline.ranker
        self.catalog = CatalogFollower(
            self.settings,
            self.model.index,
            self.metrics,
            self.producer,
            on_op=rec.observe_catalog if rec is not None else None,
        )
        self.catalog.catch_up()
        self.metrics.index_refreshed()
        self.consumer = make_consumer(self.settings)
        self.consumer.subscribe([self.settings.events_topic], listener=_Listener(self))

    def _close_clients(self) -> None:
        # bounded: SIGTERM must exit within 10 s even while the broker is unreachable
        closers: list[Callable[[], object]] = []
        if self.consumer is not None:
            closers.append(lambda: self.consumer and self.consumer.close(False, timeout_ms=2000))
        if self.catalog is not None:
            closers.append(self.catalog.close)
        if self.producer is not None:
            closers.append(lambda: self.producer and self.producer.close(timeout=2))
        for close in closers:
            try:
                close()
            except KafkaError as exc:
                log.warning("closing a Kafka client failed: %s", type(exc).__name__)

    def ready(self) -> tuple[bool, str]:
        """Readiness for /readyz: partitions assigned, model loaded, database reachable."""
        if not self._db_ok:
            return False, "database unreachable"
        waiting = self._acks_waiting_since
        if (
            waiting is not None
            and time.monotonic() - waiting >= self.settings.broker_unready_after_ms / 1000
        ):
            if self._broker_ok:  # count the transition, not every probe
                # the loop sits in a flush: the consumer's view of its connections is stale
                self._broker_failed("acks pending")
        elif self.consumer is not None:
            self._check_broker()
        if not self._broker_ok:
            return False, "broker unreachable"
        if not self.generations:
            return False, "no partitions assigned"
        return (
            True,
            f"ready: {len(self.generations)} partitions, model {self.model.files.meta.version}",
        )

    # -- rebalance ---------------------------------------------------------------------------
    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """Pause new partitions until their offsets are read from the database (``_claim``)
        and, with fused ranking, their stream state is restored (``_restore_some``)."""
        if assigned and self.consumer is not None:
            self.consumer.pause(*assigned)
            self._unclaimed.update(assigned)

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Forget revoked partitions; the loop is between batches when this runs."""
        for tp in revoked:
            self.generations.pop(tp.partition, None)
            self._unclaimed.discard(tp)
        if self.state_restore is not None:
            self.state_restore.discard(tp.partition for tp in revoked)
        self.metrics.up.set(1 if self.generations else 0)

    def _claim(self) -> None:
        assert self.consumer is not None
        claimed = self.store.claim_partitions(
            self.settings.events_topic, [tp.partition for tp in self._unclaimed]
        )
        for tp in list(self._unclaimed):
            generation, next_offset = claimed[tp.partition]
            self.generations[tp.partition] = generation
            if next_offset is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, next_offset)
        log.info("claimed partitions %s", sorted(claimed))
        resumed = list(self._unclaimed)
        self._unclaimed.clear()
        if self.state_restore is not None:
            # paused until all are restored: per user, live events come after restored ones
            self.state_restore.add(list(claimed))
            resumed = []
        self._relay_outbox(self.settings.publish_timeout_ms / 1000)
        if not self._paused_for_store:
            self.consumer.resume(*resumed)
        self.metrics.up.set(1)

    # -- one step ----------------------------------------------------------------------------
    def step(self) -> int:
        """One iteration of the loop; returns the number of event records processed."""
        assert self.consumer is not None and self.catalog is not None
        try:
            self.catalog.poll()
            self.metrics.index_refreshed()
        except KafkaError as exc:
            self._broker_failed(f"catalog poll: {type(exc).__name__}")
        try:
            if self._paused_for_store:
                self._maybe_resume()
            if self._unclaimed and not self._paused_for_store:
                self._claim()
            if self.state_restore is not None and not self._paused_for_store:
                self._restore_some()
        except StoreError as exc:
            self._store_failed(exc, [])
        due = self._relay_at is not None and time.monotonic() >= self._relay_at
        if due and not self._paused_for_store:
            self._relay_outbox(self.settings.publish_timeout_ms / 1000)
        try:
            polled = self.consumer.poll(
                timeout_ms=self.settings.poll_timeout_ms,
                max_records=self.settings.batch_max_events,
            )
        except KafkaError as exc:
            self._broker_failed(f"poll: {type(exc).__name__}")
            time.sleep(min(1.0, self._relay_backoff_s))
            return 0
        self._check_broker()
        records = [
            Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
            for tp, batch in polled.items()
            if tp.partition in self.generations and tp not in self._unclaimed
            for r in batch
        ]
        if records:
            self.process(records)
        self.metrics.sample_lag(
            self.consumer,
            [TopicPartition(self.settings.events_topic, p) for p in self.generations],
        )
        return len(records)

    def _restore_some(self) -> None:
        """A slice of the pending stream-state restores; resume the partitions once all are."""
        assert self.consumer is not None and self.state_restore is not None
        if not self.state_restore.pending:
            return
        finished = self.state_restore.step()
        topic = self.settings.events_topic
        owned = [TopicPartition(topic, p) for p in finished if p in self.generations]
        if owned:
            self.consumer.resume(*owned)

    def process(self, records: Sequence[Record]) -> None:
        """Steps 3 to 6 for one batch."""
        try:
            write, stats = self.pipeline.process(records, self.store, self.generations)
            start = time.perf_counter()
            before_commit(write)
            stored = self.store.commit_batch(write)
            after_commit(stored)
            stats.stage_seconds["store"] = stats.stage_seconds.get("store", 0.0) + (
                time.perf_counter() - start
            )
        except FencedError as exc:
            log.warning("batch dropped: %s", exc)
            self.metrics.errors.labels(component="fenced").inc()
            for p in {r.partition for r in records}:
                self.generations.pop(p, None)
            return
        except StoreError as exc:
            self._store_failed(exc, records)
            return
        self._db_ok = True
        self._record_stats(len(records), stats)
        start = time.perf_counter()
        if not self._publish(stored, self.settings.publish_timeout_ms / 1000):
            self._schedule_relay()
        self.metrics.stage_seconds.labels(stage="publish").observe(time.perf_counter() - start)
        self._commit_kafka(write.next_offsets)

    # -- failures ----------------------------------------------------------------------------
    def _store_failed(self, exc: StoreError, records: Sequence[Record]) -> None:
        assert self.consumer is not None
        log.warning("database unavailable (%s); pausing for %.1fs", exc, self._backoff_s)
        self.metrics.errors.labels(component="store").inc()
        self._db_ok = False
        first: dict[int, int] = {}
        for r in records:
            first[r.partition] = min(first.get(r.partition, r.offset), r.offset)
        for p, off in first.items():
            self.consumer.seek(TopicPartition(self.settings.events_topic, p), off)
        self.consumer.pause(*self.consumer.assignment())
        self._paused_for_store = True
        self._retry_at = time.monotonic() + self._backoff_s
        self._backoff_s = min(MAX_BACKOFF_S, self._backoff_s * 2)

    def _maybe_resume(self) -> None:
        assert self.consumer is not None
        if time.monotonic() < self._retry_at:
            return
        if not self.store.ping():
            self._retry_at = time.monotonic() + self._backoff_s
            self._backoff_s = min(MAX_BACKOFF_S, self._backoff_s * 2)
            return
        log.info("database reachable again; resuming")
        self._db_ok = True
        self._paused_for_store = False
        self._backoff_s = 0.5
        self._relay_outbox(self.settings.publish_timeout_ms / 1000)
        self.consumer.resume(*(self.consumer.assignment() - self._unclaimed - self._restoring()))

    def _restoring(self) -> set[TopicPartition]:
        pending = self.state_restore.pending if self.state_restore is not None else set()
        return {TopicPartition(self.settings.events_topic, p) for p in pending}

    # -- broker health -----------------------------------------------------------------------
    def _check_broker(self) -> None:
        """Not ready once the consumer has had no broker connection for a while (setting)."""
        assert self.consumer is not None
        now = time.monotonic()
        if broker_connected(self.consumer):
            self._broker_lost_at = None
            # ready again only once the link has held for a while (no flapping on reconnects)
            if (
                not self._broker_ok
                and now - self._broker_failed_at >= self.settings.broker_unready_after_ms / 1000
            ):
                log.info("broker reachable again")
                self._broker_ok = True
            return
        if self._broker_lost_at is None:
            self._broker_lost_at = now
        elif (
            now - self._broker_lost_at >= self.settings.broker_unready_after_ms / 1000
            and self._broker_ok
        ):
            self._broker_failed(
                f"no connection for {self.settings.broker_unready_after_ms / 1000:.0f} s"
            )

    def _broker_failed(self, what: str) -> None:
        if self._broker_ok:
            log.warning("broker unreachable (%s); kafka-python keeps retrying", what)
        self._broker_ok = False
        self._broker_failed_at = time.monotonic()
        self.metrics.errors.labels(component="broker").inc()

    # -- output ------------------------------------------------------------------------------
    def _schedule_relay(self) -> None:
        self._relay_at = time.monotonic() + self._relay_backoff_s
        self._relay_backoff_s = min(MAX_BACKOFF_S, self._relay_backoff_s * 2)

    def _relay_outbox(self, timeout_s: float) -> bool:
        """Publish messages left in the outbox by a crash or an outage; True when it is empty."""
        while True:
            try:
                pending = self.store.pending_outbox(partitions=list(self.generations))
            except StoreError as exc:
                log.warning("outbox relay skipped: %s", exc)
                self._schedule_relay()
                return False
            if not pending:
                self._relay_at = None
                self._relay_backoff_s = 0.5
                return True
            log.info("relaying %d outbox messages", len(pending))
            if not self._publish(pending, timeout_s):
                self._schedule_relay()
                return False

    def _publish(self, messages: Sequence[OutboxMessage], timeout_s: float) -> bool:
        """Send, wait for acks, delete the acked rows; True when every message was acked.

        Messages not acked stay in the outbox; a later relay sends them again (same rec_id).
        """
        assert self.producer is not None
        sent = []
        acked: list[int] = []
        for msg in messages:
            try:
                fut = self.producer.send(
                    msg.topic, key=msg.key, value=msg.value, headers=list(msg.headers)
                )
            except MessageSizeTooLargeError:  # refused by the client's own size check
                if self._send_truncated(msg):
                    acked.append(msg.id or 0)
                continue
            except KafkaError as exc:  # no metadata within max_block_ms: broker unreachable
                self._broker_failed(f"send: {type(exc).__name__}")
                break
            sent.append((msg, fut))
        self._acks_waiting_since = time.monotonic()
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            self._broker_failed("acks not received in time")
        finally:
            self._acks_waiting_since = None
        for msg, fut in sent:
            if not fut.is_done:
                continue
            try:
                fut.get(timeout=0)
            except MessageSizeTooLargeError:  # refused by the broker
                if self._send_truncated(msg):
                    acked.append(msg.id or 0)
                continue
            except KafkaError as exc:
                log.warning("publish failed, kept in outbox: %s", type(exc).__name__)
                self.metrics.errors.labels(component="broker").inc()
                continue
            acked.append(msg.id or 0)
            self._count_published(msg)
        self.metrics.outbox_pending.set(len(messages) - len(acked))
        try:
            self.store.delete_outbox([i for i in acked if i])
        except StoreError as exc:
            log.warning("outbox not cleared (messages may be re-sent): %s", exc)
            return False
        return len(acked) == len(messages)

    def _send_truncated(self, msg: OutboxMessage) -> bool:
        """Publish an oversized dead letter cut to max_event_bytes; False for other topics
        (only a dead letter, which carries the input record, can be this large)."""
        assert self.producer is not None
        if msg.topic != self.settings.dlq_topic:
            return False
        value = (msg.value or b"")[: self.settings.max_event_bytes]
        headers = [*list(msg.headers), ("x-streamrec-truncated", b"true")]
        try:
            self.producer.send(msg.topic, key=msg.key, value=value, headers=headers).get(timeout=30)
        except KafkaError as exc:
            log.warning("dead letter not published: %s", type(exc).__name__)
            return False
        self._count_published(msg)
        return True

    def _count_published(self, msg: OutboxMessage) -> None:
        if msg.topic == self.settings.recs_topic:
            self.metrics.recommendations_published.inc()
            if msg.event_ts_ms > 0:
                self.metrics.event_to_rec_seconds.observe(
                    max(0.0, self.clock() - msg.event_ts_ms / 1000.0)
                )
        else:
            reason = dict(msg.headers).get("x-streamrec-error", b"unknown").decode()
            self.metrics.dead_letters.labels(reason=reason, topic=self.settings.events_topic).inc()

    def _commit_kafka(self, next_offsets: dict[int, int]) -> None:
        assert self.consumer is not None
        offsets = {
            TopicPartition(self.settings.events_topic, p): OffsetAndMetadata(o, "", -1)
            for p, o in next_offsets.items()
        }
        try:
            # asynchronous: a commit must never block the loop (the database is the truth)
            self.consumer.commit_async(offsets)
        except KafkaError as exc:
            log.debug("kafka commit skipped (monitoring only): %s", type(exc).__name__)

    def _record_stats(self, n: int, stats: Any) -> None:
        self.metrics.observe_recommendations(stats.recommended)
        self.metrics.batch_size.observe(n)
        for (etype, outcome), count in stats.outcomes.items():
            self.metrics.events_consumed.labels(type=etype, outcome=outcome).inc(count)
        for stage, seconds in stats.stage_seconds.items():
            self.metrics.stage_seconds.labels(stage=stage).observe(seconds)
        self.metrics.new_item_vectors.inc(stats.new_item_vectors)
        for (source, kind), count in stats.slots.items():
            self.metrics.recommended_slots.labels(source=source, item=kind).inc(count)
