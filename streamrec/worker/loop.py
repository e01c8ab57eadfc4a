"""The run loop. One batch, in numbered steps:

1. poll the catalog (non-blocking, at most ``catalog_batch_max_records``) into the index;
   swap in a compacted graph, write an index snapshot when due (``streamrec.worker.snapshots``);
   with global signals, merge the other workers' trending/co-visitation deltas and publish this
   worker's when due (``streamrec.worker.signals``);
2. poll a batch of events (partitions we have claimed only; none while the output backlog is
   at ``outbox_max_pending``: the loop keeps polling, so the group keeps us);
3. decode, dedupe, fold, encode, search, rank (``Pipeline.process``);
4. commit users + applied ids + outbox + next offsets in ONE database transaction,
   fenced by the partitions' generations;
5. hand the committed outbox rows to the relay thread (``streamrec.worker.relay``), which
   publishes them asynchronously and deletes the delivered rows: this thread never waits on
   the output broker;
6. commit the offsets to Kafka too (for lag monitoring only; the database is the truth).

Every call this thread makes is bounded below ``max_poll_interval_ms`` (the poll, the
database's busy and statement timeouts, the catalog slice, the restore slice, the chunk of
expired applied events pruned: ``streamrec.state.retention``). A crash
anywhere before 4 loses nothing (the batch is re-read from the stored offsets); a crash after
4 re-publishes from the outbox on restart (same ``rec_id``: at-least-once output, exactly-once
state). Signals only set the stop flag: the loop finishes its batch, the relay drains for at
most ``drain_timeout_ms``, and the worker exits.

Claimed partitions stay paused until the fused ranker's stream state (trending,
co-visitation) has been restored from their latest applied events in the database, a slice
per loop iteration (``streamrec.worker.partitions``); the ranker counts each partition offset
once, so a batch re-read after a failed commit is not counted twice.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from streamrec.errors import BrokerError, ConflictError, FencedError, StoreError
from streamrec.io.clients import (
    OutputProducer,
    broker_connected,
    make_consumer,
    make_output_producer,
    missing_topics,
)
from streamrec.ops.backoff import Backoff
from streamrec.ops.http import OpsServer
from streamrec.ops.memory import release_free_memory
from streamrec.ops.metrics import Metrics
from streamrec.ops.settings import Settings
from streamrec.state.batch import BatchWrite, OutboxMessage
from streamrec.state.restore import make_state_restore
from streamrec.state.retention import AppliedEventsRetention
from streamrec.state.store import Store
from streamrec.worker.catalog import CatalogFollower
from streamrec.worker.health import Health, OutputView
from streamrec.worker.partitions import Partitions
from streamrec.worker.relay import OutboxRelay
from streamrec.worker.reload import open_model, report_model, swap_model
from streamrec.worker.serving import ServingModel, make_ranker
from streamrec.worker.signals import SignalExchange, make_recorder, worker_name
from streamrec.worker.snapshots import (
    IndexUpkeep,
    catalog_offsets,
    load_at_start,
    refuse_snapshot,
)
from streamrec.worker.step import BatchStats, Pipeline, Record

log = logging.getLogger(__name__)

DB_PING_INTERVAL_S = 2.0  # /readyz pings the database at most this often
TOPIC_CHECK_INTERVAL_S = 10.0  # a missing output topic is looked for again this often
CONFLICT_ATTEMPTS = 3  # a batch that raced another writer is rebuilt and retried this often


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


def make_retention(
    settings: Settings, store: Store, clock: Callable[[], float], metrics: Metrics
) -> AppliedEventsRetention | None:
    """The pruning of old applied events; None when they are kept forever (retention 0)."""
    if not settings.applied_events_retention_hours:
        return None
    return AppliedEventsRetention(
        store,
        settings.applied_events_retention_hours,
        settings.applied_events_prune_rows,
        clock,
        on_pruned=metrics.applied_events_pruned.inc,
    )


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
        model: a loaded model (by default loaded from ``settings.model_dir``: a model
            directory, or a repository whose newer versions are then swapped in as they appear).
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
        self.model, self.reloader = open_model(
            settings,
            self.metrics,
            model,
            snapshot=lambda files: load_at_start(settings, files, self.metrics),
        )
        meta = self.model.files.meta
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
        release_free_memory()  # what loading a snapshot freed (streamrec.ops.memory)
        self.metrics.bind_index(lambda: self.model.index)
        if self.pipeline.ranker is not None:
            self.metrics.bind_new_items(self._new_items_searchable)
            self.metrics.bind_stream_state(self._stream_state_sizes)
        if self.pipeline.ranker is not None and settings.signals_topic:
            ranker = self.pipeline.ranker  # a reload's ranker shares the recorder (with_model)
            ranker.recorder = make_recorder(settings, ranker, worker_name(settings))
        self.store = Store(settings.db_url, settings.group_id, settings.db_timeout_ms, clock)
        self.retention = make_retention(settings, self.store, clock, self.metrics)
        self.partitions = Partitions(
            settings.events_topic,
            self.store,
            make_state_restore(
                settings, self.store, self.pipeline.ranker, self.metrics.stream_state_restored.inc
            ),
        )
        self.health = Health(
            settings.broker_unready_after_ms / 1000,
            self.metrics.errors.labels(component="broker").inc,
        )
        self.relay = OutboxRelay(
            settings, self.store, self.metrics, self.health, lambda: list(self.generations), clock
        )
        self._paused_for_store = False
        self._paused_for_output = False
        self._db_backoff = Backoff()
        self._poll_backoff = Backoff(initial_s=0.1, max_s=1.0)
        self._db_pinged_at = -DB_PING_INTERVAL_S
        self._topics_checked_at = 0.0
        self._db_answers = True
        self.producer: OutputProducer | None = None
        self.consumer: KafkaConsumer | None = None
        self.catalog: CatalogFollower | None = None
        self.signals: SignalExchange | None = None
        self.upkeep: IndexUpkeep | None = None

    def _new_items_searchable(self) -> int:
        ranker = self.pipeline.ranker  # the one served now (a reload replaces it)
        return ranker.new_items.searchable if ranker is not None else 0

    def _stream_state_sizes(self) -> dict[str, tuple[int, int]]:
        ranker = self.pipeline.ranker  # the one served now (a reload carries the state over)
        return ranker.stream_state_sizes() if ranker is not None else {}

    def _reload(self) -> None:
        """Swap in a newer model version once one is prepared (``streamrec.worker.reload``)."""
        if self.reloader is None:
            return
        prepared = self.reloader.poll(self.model)
        if prepared is None or prepared.model.number is None:
            return
        self.model = swap_model(
            prepared, self.model, self.pipeline, self.catalog, self.partitions.state_restore
        )
        self.reloader.swapped(prepared.model.number)
        if self.upkeep is not None:  # compaction and snapshots follow the new index
            self.upkeep.swap_model(self.model, self.pipeline.ranker)
        report_model(self.metrics, self.model, prepared.seconds)
        self.metrics.model_reloads.inc()

    @property
    def generations(self) -> dict[int, int]:
        """Owned partitions and their generations."""
        return self.partitions.generations

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
            # the model, the index and the catalog are loaded: keep the garbage collector from
            # walking them again in every full collection (pauses on a large heap)
            gc.freeze()
            if on_ready is not None:
                on_ready(server)
            log.info(
                "worker started: model %s, db %s",
                self.model.files.meta.version,
                self.settings.safe_db_url(),
            )
            while not stop.is_set():
                self.step()
            log.info("stopping: draining the outbox")
            self.relay.stop(self.settings.drain_timeout_ms / 1000)
            if self.upkeep is not None:
                self.upkeep.close()
        finally:  # a model being prepared is dropped with its daemon thread
            self._close_clients()
            if server is not None:
                server.__exit__(None, None, None)
            self.store.close()
            log.info("worker stopped")

    def _open_clients(self) -> None:
        self.producer = make_output_producer(self.settings)
        self._check_output_topics()
        self.relay.start(self.producer)
        ranker = self.pipeline.ranker
        self.catalog = CatalogFollower(
            self.settings,
            self.model.index,
            self.metrics,
            lambda msg: self.relay.submit([msg]),
            on_op=ranker.observe_catalog if ranker is not None else None,
            on_fresh=self.metrics.index_refreshed,
            start_offsets=catalog_offsets(self.model.snapshot),
        )
        if self.model.snapshot is not None and not self.catalog.resumed:
            refuse_snapshot(self.settings, self.model, ranker, self.metrics)
        self.catalog.catch_up(self.settings.catalog_catchup_s)
        self.metrics.index_refreshed()
        self.upkeep = IndexUpkeep(
            self.settings,
            self.metrics,
            self.model,
            ranker,
            self.catalog.positions,
            loaded=self.catalog.resumed,
            clock=self.clock,
        )
        if ranker is not None and self.settings.signals_topic:
            # the other partitions' counts before any claimed partition is restored beyond them
            self.signals = SignalExchange(
                self.settings, self.metrics, lambda: self.pipeline.ranker, self.clock
            )
            self.signals.catch_up()
        self.consumer = make_consumer(self.settings)
        self.consumer.subscribe([self.settings.events_topic], listener=_Listener(self))

    def _close_clients(self) -> None:
        # bounded: SIGTERM must exit within 10 s even while the broker is unreachable
        closers: list[Callable[[], object]] = []
        if self.consumer is not None:
            closers.append(lambda: self.consumer and self.consumer.close(False, timeout_ms=2000))
        if self.catalog is not None:
            closers.append(self.catalog.close)
        if self.signals is not None:
            closers.append(self.signals.close)  # sends what is recorded first
        if self.producer is not None:
            closers.append(lambda: self.producer.close(timeout=2) if self.producer else None)
        for close in closers:
            try:
                close()
            except KafkaError as exc:
                log.warning("closing a Kafka client failed: %s", type(exc).__name__)

    def ready(self) -> tuple[bool, str]:
        """Readiness for /readyz: database answering, brokers reachable, partitions assigned,
        output keeping up (the model is loaded before the server starts)."""
        if not self._database_answers():
            return False, "database unreachable (ping failed)"
        consumer = self.consumer
        output = OutputView(
            self.relay.backlog(), self.relay.oldest_unacked_s(), self._paused_for_output
        )
        return self.health.ready(
            (lambda: broker_connected(consumer)) if consumer is not None else None,
            len(self.generations),
            self.model.files.meta.version,
            output,
        )

    def _database_answers(self) -> bool:
        """A ping of the database, at most every ``DB_PING_INTERVAL_S`` (probes may be frequent)."""
        now = time.monotonic()
        if now - self._db_pinged_at >= DB_PING_INTERVAL_S:
            self._db_pinged_at = now
            self._db_answers = self.store.ping()
        return self._db_answers

    def _check_output_topics(self) -> None:
        """Not ready while an output topic does not exist (checked at start, then every
        ``TOPIC_CHECK_INTERVAL_S`` until it does); a send would wait, or auto-create it."""
        self._topics_checked_at = time.monotonic()
        wanted = [self.settings.recs_topic, self.settings.dlq_topic]
        try:
            missing = missing_topics(self.settings, wanted, output=True)
        except BrokerError as exc:
            log.warning("output topics not checked: %s", exc)
            return
        if missing and missing != self.health.missing_topics:
            servers = self.settings.output_bootstrap_servers or self.settings.bootstrap_servers
            log.error(
                "output topic(s) %s do not exist: create them, e.g. `streamrec topics "
                "--bootstrap-servers %s` (not ready until they exist)",
                ", ".join(missing),
                servers,
            )
        elif not missing and self.health.missing_topics:
            log.info("output topics exist now")
        self.health.missing_topics = missing

    # -- rebalance ---------------------------------------------------------------------------
    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """Pause new partitions until they are claimed and their stream state restored."""
        if self.consumer is not None:
            self.partitions.assigned(self.consumer, assigned)

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Forget revoked partitions; the loop is between batches when this runs."""
        self.partitions.revoked(revoked)
        self.metrics.up.set(1 if self.generations else 0)
        if self.signals is not None:  # before the next owner restores them
            self._signals(lambda s: s.publish(force=True))

    def _claim(self) -> None:
        assert self.consumer is not None
        self.partitions.claim(self.consumer)
        self.relay.resync()  # rows a crash or the previous owner left in the outbox
        self._resume_owned()  # not those whose stream state is still being restored
        self.metrics.up.set(1)

    # -- one step ----------------------------------------------------------------------------
    def step(self) -> int:
        """One iteration of the loop; returns the number of event records processed."""
        assert self.consumer is not None and self.catalog is not None
        try:
            self.catalog.poll()
        except KafkaError as exc:
            self.health.broker_failed(f"catalog poll: {type(exc).__name__}")
        if self.signals is not None:
            self._signals(lambda s: (s.poll(), s.publish()))
        if self.upkeep is not None:
            self.upkeep.tick()  # between two batches: compaction swaps, snapshots
        self._reload()  # between two batches: a batch is ranked by one model only
        try:
            if self._paused_for_store:
                self._maybe_resume()
            if self.partitions.unclaimed and not self._paused_for_store:
                self._claim()
            if not self._paused_for_store:
                self.partitions.restore_some(self.consumer)
                if self.retention is not None:
                    self.retention.step()  # one bounded chunk of old dedupe rows, if due
        except StoreError as exc:
            self._store_failed(exc, [])
        self._apply_backpressure()
        due = time.monotonic() - self._topics_checked_at >= TOPIC_CHECK_INTERVAL_S
        if self.health.missing_topics and due:
            self._check_output_topics()
        try:
            polled = self.consumer.poll(
                timeout_ms=self.settings.poll_timeout_ms,
                max_records=self.settings.batch_max_events,
            )
        except KafkaError as exc:
            self.health.broker_failed(f"poll: {type(exc).__name__}")
            time.sleep(self._poll_backoff.fail(time.monotonic()))
            return 0
        self._poll_backoff.reset()
        self.health.check_broker(broker_connected(self.consumer))
        records = [
            Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
            for tp, batch in polled.items()
            if self.partitions.owns(tp)
            for r in batch
        ]
        if records:
            self.process(records)
        self.metrics.sample_lag(
            self.consumer,
            [TopicPartition(self.settings.events_topic, p) for p in self.generations],
        )
        return len(records)

    def _signals(self, call: Callable[[SignalExchange], object]) -> None:
        """Merge or publish global signals; a broker failure only delays them."""
        assert self.signals is not None
        try:
            call(self.signals)
        except KafkaError as exc:
            self.health.broker_failed(f"signals: {type(exc).__name__}")

    def process(self, records: Sequence[Record]) -> None:
        """Steps 3 to 6 for one batch.

        A batch that raced another writer (``ConflictError``: a user row changed since it was
        read, or an event id was applied meanwhile) wrote nothing; it is built again from a
        fresh read and committed again, up to ``CONFLICT_ATTEMPTS`` times, then handled like a
        database failure (seek back, back off, re-poll). Never a reason to drop a partition:
        only a proven generation mismatch (``FencedError``) is.
        """
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                write, stats = self.pipeline.process(records, self.store, self.generations)
                start = time.perf_counter()
                before_commit(write)
                stored = self.store.commit_batch(write)
                after_commit(stored)
                stats.stage_seconds["store"] = stats.stage_seconds.get("store", 0.0) + (
                    time.perf_counter() - start
                )
                break
            except FencedError as exc:
                log.warning("batch dropped: %s", exc)
                self.metrics.errors.labels(component="fenced").inc()
                self.partitions.drop({r.partition for r in records})
                return
            except ConflictError as exc:
                self.metrics.errors.labels(component="conflict").inc()
                if attempt == CONFLICT_ATTEMPTS:
                    self._store_failed(exc, records)
                    return
                log.warning("batch raced another writer (%s); re-reading, attempt %d", exc, attempt)
            except StoreError as exc:
                self._store_failed(exc, records)
                return
        self.health.db_ok = True
        self._record_stats(len(records), stats)
        self.relay.submit(stored)  # step 5 runs on the relay thread
        self._commit_kafka(write.next_offsets)

    # -- backpressure ------------------------------------------------------------------------
    def _apply_backpressure(self) -> None:
        """Pause consumption while the output backlog is at its bound, resume at half of it.

        The loop keeps polling while paused (heartbeats and the group stay alive); nothing is
        lost: every record waiting is in the outbox.
        """
        assert self.consumer is not None
        backlog, bound = self.relay.backlog(), self.settings.outbox_max_pending
        if not self._paused_for_output and backlog >= bound:
            log.warning("output backlog of %d records: pausing consumption", backlog)
            self._paused_for_output = True
            self.consumer.pause(*self.consumer.assignment())
        elif self._paused_for_output and backlog <= bound // 2:
            log.info("output backlog down to %d records: resuming", backlog)
            self._paused_for_output = False
            self._resume_owned()

    def _resume_owned(self) -> None:
        """Resume the claimed, restored partitions unless the database or the output wait."""
        assert self.consumer is not None
        if self._paused_for_store or self._paused_for_output:
            return
        self.consumer.resume(
            *(self.consumer.assignment() - self.partitions.unclaimed - self.partitions.restoring())
        )

    # -- database failures -------------------------------------------------------------------
    def _store_failed(self, exc: StoreError, records: Sequence[Record]) -> None:
        assert self.consumer is not None
        wait = self._db_backoff.fail(time.monotonic())
        log.warning("database unavailable (%s); pausing for %.1fs", exc, wait)
        self.metrics.errors.labels(component="store").inc()
        self.health.db_ok = False
        first: dict[int, int] = {}
        for r in records:
            first[r.partition] = min(first.get(r.partition, r.offset), r.offset)
        for p, off in first.items():
            self.consumer.seek(TopicPartition(self.settings.events_topic, p), off)
        self.consumer.pause(*self.consumer.assignment())
        self._paused_for_store = True

    def _maybe_resume(self) -> None:
        assert self.consumer is not None
        if not self._db_backoff.due(time.monotonic()):
            return
        if not self.store.ping():
            self._db_backoff.fail(time.monotonic())
            return
        log.info("database reachable again; resuming")
        self.health.db_ok = True
        self._paused_for_store = False
        self._db_backoff.reset()
        self.relay.resync()
        self._resume_owned()

    # -- bookkeeping -------------------------------------------------------------------------
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

    def _record_stats(self, n: int, stats: BatchStats) -> None:
        self.metrics.observe_recommendations(stats.recommended)
        self.metrics.batch_size.observe(n)
        for (etype, outcome), count in stats.outcomes.items():
            self.metrics.events_consumed.labels(type=etype, outcome=outcome).inc(count)
        for stage, seconds in stats.stage_seconds.items():
            self.metrics.stage_seconds.labels(stage=stage).observe(seconds)
        self.metrics.new_item_vectors.inc(stats.new_item_vectors)
        for (arm, etype), count in stats.arm_events.items():
            self.metrics.arm_events.labels(arm=arm, type=etype).inc(count)
        for arm, count in stats.arm_recommendations.items():
            self.metrics.arm_recommendations.labels(arm=arm).inc(count)
        for (source, kind), count in stats.slots.items():
            self.metrics.recommended_slots.labels(source=source, item=kind).inc(count)
