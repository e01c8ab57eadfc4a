"""What the worker serves: the model directory loaded into an encoder, an index and a ranker."""

from __future__ import annotations

from dataclasses import dataclass

from streamrec.ops.settings import Settings
from streamrec.ranking.encoder import Encoder, OnnxEncoder
from streamrec.ranking.index import ItemIndex
from streamrec.ranking.modelfiles import ModelFiles, read_model_dir
from streamrec.ranking.ranker import Ranker, RankingConfig


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
