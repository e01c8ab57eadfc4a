"""What the worker serves: a model directory loaded into an encoder, an index and a ranker.

``--model`` names a single model directory or a model repository of numbered versions
(``streamrec.ranking.repository``); from a repository the highest complete version that
loads and passes the probe is served (``streamrec.worker.reload`` follows newer ones).

A version is refused (``RefusedModelError``, with a bounded ``reason``) when its checksums do not
match (``checksum``), its files or ONNX graph do not load (``load``), its dimension differs
from the encoder's inputs or the model being served (``dimension``), or its encoder or item
vectors give NaN or infinite values on a probe batch (``nan``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamrec.errors import ConfigError, ModelError
from streamrec.ops.settings import Settings
from streamrec.ranking.encoder import Encoder, OnnxEncoder
from streamrec.ranking.index import ItemIndex
from streamrec.ranking.modelfiles import (
    MANIFEST_FILE,
    ModelFiles,
    read_model_dir,
    verify_manifest,
)
from streamrec.ranking.ranker import Ranker, RankingConfig
from streamrec.ranking.reembed import CatalogSnapshot, reembed
from streamrec.ranking.repository import highest_complete, is_repository, version_path
from streamrec.ranking.snapshot import LoadedSnapshot, NewItemState

log = logging.getLogger(__name__)


class RefusedModelError(ModelError):
    """A model version that must not be served.

    Attributes:
        reason: one of ``ops.metrics.MODEL_REFUSAL_REASONS`` (a metric label).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class ServingModel:
    """What the worker serves: files, encoder, index.

    Attributes:
        number: the repository version (None for a single model directory).
        snapshot: the index snapshot the index was loaded from (None: built from the model).
    """

    files: ModelFiles
    encoder: Encoder
    index: ItemIndex
    number: int | None = None
    snapshot: LoadedSnapshot | None = None

    def describe(self) -> str:
        """``version 3 (sasrec-...)`` or the content version alone, for logs."""
        version = self.files.meta.version
        return version if self.number is None else f"version {self.number} ({version})"


def build_index(
    settings: Settings, files: ModelFiles, catalog: CatalogSnapshot | None = None
) -> ItemIndex:
    """The HNSW index of the model's items, plus ``catalog``'s items re-embedded (None: the
    model's items only, no catalog applied yet)."""
    return reembed(
        files.item_ids,
        files.item_vectors,
        catalog,
        m=settings.hnsw_m,
        ef_construction=settings.hnsw_ef_construction,
        ef_search=settings.hnsw_ef_search,
    )


SnapshotSource = Callable[[ModelFiles], LoadedSnapshot | None]


def load_serving_model(
    settings: Settings,
    int8: bool = False,
    on_refused: Callable[[int, RefusedModelError], None] | None = None,
    snapshot: SnapshotSource = lambda files: None,
) -> ServingModel:
    """Load the model directory (or a repository's highest complete version that loads).

    Args:
        settings: where the model is and the index parameters.
        int8: serve ``encoder.int8.onnx``.
        on_refused: called with each repository version refused on the way (logged anyway).
        snapshot: the newest valid index snapshot for the loaded model's files, if any; the
            index comes from it instead of being built from the model's vectors.

    With A/B arms that name a ``model_version`` (``Settings.pinned_model_version``), that
    version of the repository is served, or none: never another one in its place.

    Raises:
        ModelError: the directory, or every version of the repository, is unusable; or the
            pinned version is missing or refused.
        ConfigError: arms pin a version but ``model_dir`` is a single model directory.
    """
    root = Path(settings.model_dir)
    pinned = settings.pinned_model_version()
    if pinned is not None:
        return _load_pinned(settings, root, pinned, int8, on_refused, snapshot)
    if not is_repository(root):
        return prepare_version(settings, root, None, int8=int8, snapshot=snapshot)
    skip: set[int] = set()
    while True:
        number, bad = highest_complete(root, skip)
        for refused_number, why in bad:
            _refused(refused_number, RefusedModelError("checksum", why), on_refused)
            skip.add(refused_number)
        try:
            path = version_path(root, number)
            return prepare_version(settings, path, number, int8=int8, snapshot=snapshot)
        except RefusedModelError as exc:
            _refused(number, exc, on_refused)
            skip.add(number)


def _load_pinned(
    settings: Settings,
    root: Path,
    number: int,
    int8: bool,
    on_refused: Callable[[int, RefusedModelError], None] | None,
    snapshot: SnapshotSource,
) -> ServingModel:
    """The version the A/B arms name, checked as any version (manifest, load, probe)."""
    if not is_repository(root):
        raise ConfigError(
            f"ab_arms name model_version {number}, but model_dir {root} is not a repository "
            "of numbered versions"
        )
    path = version_path(root, number)
    if not (path / MANIFEST_FILE).is_file():
        raise ModelError(f"ab_arms name model_version {number}: {path} is not a complete version")
    try:
        return prepare_version(settings, path, number, int8=int8, snapshot=snapshot)
    except RefusedModelError as exc:
        _refused(number, exc, on_refused)
        raise ModelError(f"ab_arms name model_version {number}, which is refused: {exc}") from exc


def _refused(
    number: int, exc: RefusedModelError, on_refused: Callable[[int, RefusedModelError], None] | None
) -> None:
    log.error("model version %d refused (%s): %s", number, exc.reason, exc)
    if on_refused is not None:
        on_refused(number, exc)


def prepare_version(
    settings: Settings,
    path: Path,
    number: int | None,
    int8: bool = False,
    dim: int | None = None,
    catalog: CatalogSnapshot | None = None,
    snapshot: SnapshotSource | None = None,
) -> ServingModel:
    """Verify, load, probe and index one model directory.

    Args:
        settings: index parameters and encoder threads.
        path: the model directory.
        number: its repository version (None: a single directory).
        int8: serve ``encoder.int8.onnx``.
        dim: the dimension it must have (the served model's; None: any).
        catalog: the served index's items, re-embedded beside the model's
            (``streamrec.ranking.reembed``).
        snapshot: at start, the newest valid index snapshot for these files (it replaces
            building the index; a snapshot of another model is foreign and never offered).

    Raises:
        RefusedModelError: the version must not be served (module docstring).
    """
    if number is not None:
        try:
            verify_manifest(path)
        except ModelError as exc:
            raise RefusedModelError("checksum", str(exc)) from exc
    try:
        files = read_model_dir(path)
    except ModelError as exc:
        reason = "checksum" if "checksum" in str(exc) else "load"
        raise RefusedModelError(reason, str(exc)) from exc
    meta = files.meta
    if dim is not None and meta.dim != dim:
        raise RefusedModelError(
            "dimension",
            f"{path}: dimension {meta.dim} differs from the served model's {dim} (catalog "
            "vectors are in that dimension: restart the workers to change it)",
        )
    try:
        encoder = OnnxEncoder(
            files.encoder_path(int8), meta.dim, meta.max_len, settings.encoder_threads
        )
    except ModelError as exc:
        raise RefusedModelError("load", str(exc)) from exc
    probe(files, encoder)
    snap = snapshot(files) if snapshot is not None and catalog is None else None
    if snap is not None:
        return ServingModel(files, encoder, snap.index, number=number, snapshot=snap)
    return ServingModel(files, encoder, build_index(settings, files, catalog), number=number)


def probe(files: ModelFiles, encoder: Encoder, seed: int = 0) -> None:
    """Run the encoder on a small batch of histories of the model's items.

    Raises:
        RefusedModelError: ``dimension`` when the encoder rejects or returns the wrong shape,
            ``nan`` when the item vectors or the user vectors are not finite.
    """
    vectors, meta = files.item_vectors, files.meta
    if not np.isfinite(vectors).all():
        raise RefusedModelError("nan", f"{files.path}: item vectors hold NaN or infinite values")
    if not len(vectors):
        return
    rng = np.random.default_rng(seed)
    reach = max(1, meta.max_len)
    lengths = sorted({1, max(1, reach // 2), reach})
    histories = [vectors[rng.integers(0, len(vectors), size=n)] for n in lengths]
    try:
        users = encoder.encode(histories)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise RefusedModelError(
            "dimension", f"{files.path}: the encoder fails on {meta.dim}-dim histories: {exc}"
        ) from exc
    if users.shape != (len(histories), meta.dim):
        raise RefusedModelError(
            "dimension",
            f"{files.path}: the encoder returns {users.shape}, expected "
            f"({len(histories)}, {meta.dim})",
        )
    if not np.isfinite(users).all():
        raise RefusedModelError("nan", f"{files.path}: the encoder returns NaN or infinite vectors")


def make_ranker(settings: Settings, model: ServingModel) -> Ranker | None:
    """The fused ranker of the settings (None: encoder neighbours only)."""
    if settings.ranking == "encoder":
        return None
    config = RankingConfig.from_settings(settings)
    ranker = Ranker(model.encoder, model.index, config, trained=model.files.item_ids)
    if model.snapshot is not None:  # what the catalog had built beside the index
        ranker.new_items.load_state(
            model.snapshot.new_items.content, model.snapshot.new_items.vectored
        )
        # the ranker keeps what it needs (most content vectors are the index's own, and it
        # shares the index's id strings): drop the loaded copies (~500 MiB at 1M items with
        # catalog vectors, benchmarks/memory.py)
        model.snapshot.new_items = NewItemState()
    return ranker
