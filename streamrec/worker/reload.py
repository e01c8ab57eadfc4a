"""Hot model reload: follow a model repository, prepare a new version aside, swap between batches.

Every ``model_poll_interval_s`` the poll thread lists the repository (``ranking/repository``:
a directory listing, no checksum). A version above the served one, with its manifest present
and not refused before, is prepared on a background thread: checksums verified, files and
ONNX graph loaded, the encoder probed, the catalog re-embedded (``ranking/reembed``: a new
index built from a snapshot of the served index's items, beside the served one). The poll
thread only takes the snapshot (a copy of ids and flags) and, once the preparation is done,
the catch-up and the swap: the catalog changes made meanwhile are applied to the new index
(at most ``catalog_batch_max_records`` per loop iteration, until none is left), then the fused
ranker is rebuilt around the new encoder and index with the *same* stream state (trending,
co-visitation, counted offsets: none of it depends on the model), and the pipeline, the
catalog follower and the stream-state restore switch to it, all between two batches. A batch
is ranked by one model only, so every output's ``model_version`` is the one it was ranked by.

A version that fails (``serving.RefusedModelError``: checksum, load, dimension, nan) is refused:
an ERROR log line, ``streamrec_model_reload_failures_total{reason}``, and the served model
keeps serving; it is never tried again (publish a fixed model as a new number). Memory: two
models and two indexes exist while a version is prepared.

While the A/B arms name a ``model_version`` (``Settings.pinned_model_version``) that version
is served and the repository is not followed: an experiment is never switched to another
model halfway (serving two versions at once is refused by the settings: README, A/B arms).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamrec.ops.metrics import Metrics
from streamrec.ops.settings import Settings
from streamrec.ranking.reembed import CatalogSnapshot, catch_up, snapshot
from streamrec.ranking.repository import complete_versions
from streamrec.state.restore import StateRestore
from streamrec.worker.catalog import CatalogFollower
from streamrec.worker.serving import (
    RefusedModelError,
    ServingModel,
    SnapshotSource,
    load_serving_model,
    prepare_version,
)
from streamrec.worker.step import Pipeline

log = logging.getLogger(__name__)


def open_model(
    settings: Settings,
    metrics: Metrics,
    model: ServingModel | None = None,
    snapshot: SnapshotSource = lambda files: None,
) -> tuple[ServingModel, ModelReloader | None]:
    """The model to serve at start (``model``, or loaded from ``settings.model_dir`` with its
    index from ``snapshot`` when one is valid) and, for a repository with
    ``model_poll_interval_s`` > 0, the reloader that follows it (none while the A/B arms
    name a ``model_version``: that version is served until the arms change)."""
    start = time.perf_counter()
    refused: set[int] = set()

    def on_refused(number: int, exc: RefusedModelError) -> None:
        refused.add(number)
        metrics.model_reload_failures.labels(reason=exc.reason).inc()

    served = model or load_serving_model(settings, on_refused=on_refused, snapshot=snapshot)
    report_model(metrics, served, time.perf_counter() - start)
    reloader = None
    follow = settings.model_poll_interval_s > 0 and settings.pinned_model_version() is None
    if model is None and served.number is not None and follow:
        reloader = ModelReloader(settings, metrics, served.number, refused=refused)
    return served, reloader


def report_model(metrics: Metrics, model: ServingModel, seconds: float) -> None:
    """Set the model's info metric and its load time."""
    metrics.model_load_seconds.set(seconds)
    meta = model.files.meta
    metrics.model_info.info(
        {
            "version": meta.version,
            "repository_version": "none" if model.number is None else str(model.number),
            "dim": str(meta.dim),
            "max_len": str(meta.max_len),
        }
    )


@dataclass
class Prepared:
    """A version loaded, probed and indexed beside the served one, ready to swap in."""

    model: ServingModel
    catalog: CatalogSnapshot
    seconds: float
    caught_up: int = 0  # catalog changes replayed onto its index since the snapshot


class ModelReloader:
    """Watches a model repository and prepares newer versions on a background thread.

    Args:
        settings: the repository (``model_dir``), the poll interval, index parameters.
        metrics: reload failures are counted here.
        serving: the version being served.
        int8: serve ``encoder.int8.onnx``.
        refused: versions already refused (at start).
        clock: monotonic seconds (a fake in tests).
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        serving: int,
        int8: bool = False,
        refused: set[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.root = Path(settings.model_dir)
        self.metrics = metrics
        self.serving = serving
        self.int8 = int8
        self.refused: set[int] = set(refused or ())
        self.clock = clock
        self._due = clock() + settings.model_poll_interval_s
        self._thread: threading.Thread | None = None
        self._number = 0  # the version being prepared
        self._result: Prepared | RefusedModelError | None = None
        self._ready: Prepared | None = None  # prepared, catching up with the catalog

    def poll(self, served: ServingModel) -> Prepared | None:
        """Called by the poll thread once per loop iteration; bounded work.

        Returns:
            a prepared version, caught up with the catalog, to swap in now (``swapped`` must
            follow), or None.
        """
        if self._ready is not None:
            return self._catch_up(served)
        if self._thread is not None:
            if self._thread.is_alive():
                return None
            self._ready = self._collect()
            return self._catch_up(served) if self._ready is not None else None
        now = self.clock()
        if now < self._due:
            return None
        self._due = now + self.settings.model_poll_interval_s
        try:
            newer = complete_versions(self.root, above=self.serving, skip=self.refused)
        except OSError as exc:
            log.warning("model repository %s not listed: %s", self.root, exc)
            return None
        if newer:
            self._start(newer[0], served)
        return None

    def _catch_up(self, served: ServingModel) -> Prepared | None:
        """Replay onto the prepared index what the catalog changed since its snapshot, at most
        ``catalog_batch_max_records`` changes per loop iteration; ready when none is left."""
        ready = self._ready
        assert ready is not None
        applied, left = catch_up(
            ready.model.index, served.index, ready.catalog, self.settings.catalog_batch_max_records
        )
        ready.caught_up += applied
        if left:
            return None
        self._ready = None
        return ready

    def _start(self, number: int, served: ServingModel) -> None:
        catalog = snapshot(served.index)
        dim = served.files.meta.dim
        self._number = number
        self._result = None
        log.info("model version %d found: preparing it beside %s", number, served.describe())
        self._thread = threading.Thread(
            target=self._prepare, args=(number, dim, catalog), name="model-reload", daemon=True
        )
        self._thread.start()

    def _prepare(self, number: int, dim: int, catalog: CatalogSnapshot) -> None:
        start = time.perf_counter()
        path = self.root / str(number)
        try:
            model = prepare_version(self.settings, path, number, self.int8, dim, catalog)
            self._result = Prepared(model, catalog, time.perf_counter() - start)
        except RefusedModelError as exc:
            self._result = exc
        except Exception as exc:  # never let a model file take the worker down
            self._result = RefusedModelError("load", f"{path}: {type(exc).__name__}: {exc}")

    def _collect(self) -> Prepared | None:
        result, number = self._result, self._number
        self._thread = None
        self._result = None
        if isinstance(result, Prepared):
            return result
        exc = result if result is not None else RefusedModelError("load", "preparation stopped")
        self.refuse(number, exc)
        return None

    def refuse(self, number: int, exc: RefusedModelError) -> None:
        """Never try ``number`` again; log and count the refusal."""
        self.refused.add(number)
        log.error(
            "model version %d refused (%s), still serving version %d: %s",
            number,
            exc.reason,
            self.serving,
            exc,
        )
        self.metrics.model_reload_failures.labels(reason=exc.reason).inc()

    def swapped(self, number: int) -> None:
        """The prepared version is served now."""
        self.serving = number

    def wait(self, timeout_s: float = 5.0) -> None:
        """Wait for a preparation in progress, at most ``timeout_s`` (tests, benchmarks; a
        stopping worker does not wait: the thread is a daemon and its result is dropped)."""
        if self._thread is not None:
            self._thread.join(timeout_s)


def swap_model(
    prepared: Prepared,
    served: ServingModel,
    pipeline: Pipeline,
    catalog: CatalogFollower | None,
    restore: StateRestore | None,
) -> ServingModel:
    """Switch the pipeline, the catalog follower and the restore to a prepared version
    (caught up with the catalog: ``ModelReloader.poll`` returned it in this iteration).

    Call on the poll thread between two batches. Returns the model now served.
    """
    model = prepared.model
    old = pipeline.ranker
    ranker = (
        old.with_model(model.encoder, model.index, model.files.item_ids)
        if old is not None
        else None
    )
    meta = model.files.meta
    pipeline.use_model(model.encoder, model.index, meta.version, ranker, model.files.item_ids)
    if catalog is not None:
        catalog.use_index(model.index, ranker.observe_catalog if ranker is not None else None)
    if restore is not None and ranker is not None:
        restore.ranker = ranker
    log.info(
        "now serving model %s (was %s): %d items, %d catalog changes caught up",
        model.describe(),
        served.describe(),
        model.index.size,
        prepared.caught_up,
    )
    return model
