"""What the worker serves: the model directory loaded into an encoder, an index and a ranker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from streamrec.ops.settings import Settings
from streamrec.ranking.encoder import Encoder, OnnxEncoder
from streamrec.ranking.index import ItemIndex
from streamrec.ranking.modelfiles import ModelFiles, read_model_dir
from streamrec.ranking.ranker import Ranker, RankingConfig
from streamrec.ranking.snapshot import LoadedSnapshot, NewItemState


@dataclass
class ServingModel:
    """What the worker serves: files, encoder, index (and the snapshot it came from, if any)."""

    files: ModelFiles
    encoder: Encoder
    index: ItemIndex
    snapshot: LoadedSnapshot | None = None


def build_index(settings: Settings, files: ModelFiles) -> ItemIndex:
    """The HNSW index of the model's items (no catalog applied yet)."""
    return ItemIndex(
        files.item_ids,
        files.item_vectors,
        m=settings.hnsw_m,
        ef_construction=settings.hnsw_ef_construction,
        ef_search=settings.hnsw_ef_search,
    )


def load_serving_model(
    settings: Settings,
    int8: bool = False,
    snapshot: Callable[[ModelFiles], LoadedSnapshot | None] = lambda files: None,
) -> ServingModel:
    """Load the model directory and the ONNX encoder; the index comes from ``snapshot(files)``
    (the newest valid index snapshot) or, without one, is built from the model's vectors."""
    files = read_model_dir(settings.model_dir)
    encoder = OnnxEncoder(
        files.encoder_path(int8), files.meta.dim, files.meta.max_len, settings.encoder_threads
    )
    snap = snapshot(files)
    index = snap.index if snap is not None else build_index(settings, files)
    return ServingModel(files=files, encoder=encoder, index=index, snapshot=snap)


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
