"""The index's upkeep around the catalog: snapshots at start, between batches and at shutdown,
and compaction.

At start (``load_at_start``) the newest valid snapshot under ``index_snapshot_dir`` replaces
the build of the index from the model (about a minute at 100,000 items) and the catalog
follower resumes from the offsets the snapshot covers; a rejected snapshot is logged, counted
in ``streamrec_index_snapshots_rejected_total`` and skipped. Between batches (``tick``) the
compactor swaps in a rebuilt graph when one is ready (``streamrec.ranking.compaction``) and a
snapshot is written every ``index_snapshot_interval_s`` (the first one soon after a start that
loaded none), then one last at shutdown (``close``, skipped when it would not fit the
shutdown's time budget). A snapshot is taken on the loop's thread,
between two catalog polls, so the offsets it records are exactly the records its index holds.
A failed write is logged and counted; the worker keeps serving. A hot model swap calls
``swap_model``: snapshots are tied to their model (``snapshot_identity``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from streamrec.errors import SnapshotRejected
from streamrec.ops.memory import release_free_memory
from streamrec.ops.metrics import Metrics
from streamrec.ops.settings import Settings
from streamrec.ranking.compaction import Compactor
from streamrec.ranking.modelfiles import ModelFiles
from streamrec.ranking.ranker import Ranker
from streamrec.ranking.snapshot import (
    LoadedSnapshot,
    NewItemState,
    SnapshotIdentity,
    load_newest,
    total_bytes,
    write_snapshot,
)
from streamrec.worker.serving import ServingModel, build_index

log = logging.getLogger(__name__)

# SIGTERM must exit within 10 s, the outbox drain included: the snapshot at shutdown is skipped
# when it would take longer than this (by the last write's time, or else by the index's size
# at ``WRITE_S_PER_ITEM``: about 1.3 s at 100,000 items x d=64 measured, BENCHMARKS.md)
SHUTDOWN_WRITE_BUDGET_S = 4.0
WRITE_S_PER_ITEM = 2e-5


def snapshot_identity(settings: Settings, files: ModelFiles) -> SnapshotIdentity:
    """What a usable snapshot must match: this model, its dimension, this catalog topic, these
    graph parameters."""
    return SnapshotIdentity(
        files.meta.version,
        files.meta.dim,
        settings.items_topic,
        settings.hnsw_m,
        settings.hnsw_ef_construction,
    )


def load_at_start(settings: Settings, files: ModelFiles, metrics: Metrics) -> LoadedSnapshot | None:
    """The newest valid snapshot for this model and catalog (None: none, or snapshots off)."""
    if settings.index_snapshot_dir is None:
        return None
    start = time.perf_counter()

    def rejected(path: object, exc: SnapshotRejected) -> None:
        log.warning("index snapshot %s ignored (%s): %s", path, exc.reason, exc.detail)
        metrics.snapshots_rejected.labels(reason=exc.reason).inc()

    snap = load_newest(
        settings.index_snapshot_dir,
        snapshot_identity(settings, files),
        settings.hnsw_ef_search,
        rejected,
    )
    if snap is None:
        log.info("no usable index snapshot in %s: building the index", settings.index_snapshot_dir)
        return None
    seconds = time.perf_counter() - start
    metrics.snapshot_load_seconds.set(seconds)
    metrics.snapshot_taken(snap.created_at)
    log.info(
        "index snapshot %s loaded in %.2fs: %d items, %d searchable",
        snap.path.name,
        seconds,
        snap.index.n_labels,
        snap.index.size,
    )
    return snap


def catalog_offsets(snap: LoadedSnapshot | None) -> dict[int, int] | None:
    """The catalog offsets a loaded snapshot covers, per partition (None: read from the start)."""
    if snap is None:
        return None
    return {int(p): int(o) for p, o in snap.offsets.items()}


def refuse_snapshot(
    settings: Settings, model: ServingModel, ranker: Ranker | None, metrics: Metrics
) -> None:
    """The loaded snapshot's catalog offsets are outside the topic's range: never trust it;
    build the index from the model again, in place (the follower reads the whole topic)."""
    assert model.snapshot is not None
    log.warning(
        "index snapshot %s ignored (offsets): its catalog offsets are not in the topic; "
        "rebuilding the index from the whole catalog",
        model.snapshot.path.name,
    )
    metrics.snapshots_rejected.labels(reason="offsets").inc()
    model.index.replace_with(build_index(settings, model.files))
    model.snapshot = None
    if ranker is not None:
        ranker.new_items.load_state({}, [])


class IndexUpkeep:
    """Compaction and periodic snapshots, between two batches of the loop.

    Args:
        settings: the snapshot directory and interval, the compaction ratio.
        metrics: compactions, snapshot writes, their durations and age.
        model: the served model (its index is compacted and saved).
        ranker: the fused ranker whose new-item state is saved with the index (None: none).
        positions: the catalog follower's next offset per partition (what the index holds).
        loaded: whether the index came from a snapshot (if not, one is written soon).
        clock: seconds since the epoch (snapshot timestamps).
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        model: ServingModel,
        ranker: Ranker | None,
        positions: Callable[[], dict[int, int]],
        loaded: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.model = model
        self.ranker = ranker
        self.positions = positions
        self.clock = clock
        self._last_write_s: float | None = None
        self.identity = snapshot_identity(settings, model.files)
        self.compactor = self._compactor(model)
        interval = settings.index_snapshot_interval_s
        self._next_snapshot = time.monotonic() + (interval if loaded else min(interval, 5.0))

    def _compactor(self, model: ServingModel) -> Compactor:
        metrics = self.metrics

        def done(seconds: float) -> None:
            metrics.index_compactions.inc()
            release_free_memory()  # the old graph and the build's copies (streamrec.ops.memory)

        return Compactor(model.index, self.settings.index_compact_deleted_ratio, on_done=done)

    def swap_model(self, model: ServingModel, ranker: Ranker | None) -> None:
        """Serve another model and index from now on (between two batches): a compaction of
        the old index is dropped, and the new index is saved soon (older snapshots are of the
        old model: foreign from now on)."""
        if self.compactor.running:
            self.model.index.abandon_compaction()
        self.model, self.ranker = model, ranker
        self.identity = snapshot_identity(self.settings, model.files)
        self.compactor = self._compactor(model)
        self._last_write_s = None
        self._next_snapshot = time.monotonic() + min(self.settings.index_snapshot_interval_s, 5.0)

    def tick(self) -> None:
        """Swap in a finished compaction or start one; write a snapshot when due."""
        self.compactor.tick()
        if self.settings.index_snapshot_dir is not None and time.monotonic() >= self._next_snapshot:
            self.write()

    def write(self) -> bool:
        """Write a snapshot now (never raises: a failure is logged and counted)."""
        if self.settings.index_snapshot_dir is None:
            return False
        self._next_snapshot = time.monotonic() + self.settings.index_snapshot_interval_s
        start = time.perf_counter()
        try:
            offsets = {str(p): o for p, o in self.positions().items()}
            new_items = NewItemState()
            if self.ranker is not None:
                new_items = NewItemState(*self.ranker.new_items.saved_state())
            created = self.clock()
            path = write_snapshot(
                self.settings.index_snapshot_dir,
                self.identity,
                self.model.index,
                new_items,
                offsets,
                created,
            )
        except Exception as exc:  # a full disk must not stop the worker
            log.error("index snapshot not written: %s: %s", type(exc).__name__, exc)
            self.metrics.errors.labels(component="snapshot").inc()
            return False
        seconds = time.perf_counter() - start
        release_free_memory()  # the snapshot's copies of the arrays (streamrec.ops.memory)
        self._last_write_s = seconds
        self.metrics.snapshot_write_seconds.set(seconds)
        self.metrics.snapshots_written.inc()
        self.metrics.snapshot_taken(created)
        log.info(
            "index snapshot %s written in %.2fs (%d bytes)", path.name, seconds, total_bytes(path)
        )
        return True

    def close(self) -> None:
        """At shutdown: one last snapshot unless it would not fit ``SHUTDOWN_WRITE_BUDGET_S``
        (then the last periodic one stays the newest); a compaction still building is dropped."""
        if self.settings.index_snapshot_dir is None:
            return
        estimate = self._last_write_s
        if estimate is None:
            estimate = WRITE_S_PER_ITEM * self.model.index.n_labels
        if estimate > SHUTDOWN_WRITE_BUDGET_S:
            log.warning(
                "no index snapshot at shutdown: it would take about %.1fs (budget %.0fs)",
                estimate,
                SHUTDOWN_WRITE_BUDGET_S,
            )
            return
        self.write()
