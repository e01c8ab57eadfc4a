"""Tiny ONNX encoders and model directories for tests that need no torch.

``mean_encoder_onnx`` is the masked mean of the history's vectors (the ``MeanEncoder`` fake,
as an ONNX graph with the model-directory signature); variants make it return NaN or declare
a fixed dimension. Building a graph needs the ``onnx`` package (the ``train`` extra): without
it the test is skipped (failed in CI, ``needs.require_module``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from needs import require_module

from streamrec.ranking.modelfiles import ModelMeta, write_model_dir
from streamrec.ranking.repository import claim_next_version


def mean_encoder_onnx(declared_dim: int | str = "dim", nan: bool = False) -> bytes:
    """An encoder graph: user = sum(history * mask) / max(sum(mask), 1) (times NaN if asked)."""
    onnx = require_module("onnx")
    helper, TensorProto = onnx.helper, onnx.TensorProto  # noqa: N806 - onnx's names
    history = helper.make_tensor_value_info(
        "history", TensorProto.FLOAT, ["batch", "length", declared_dim]
    )
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "length"])
    user = helper.make_tensor_value_info("user", TensorProto.FLOAT, ["batch", declared_dim])
    inits = [
        helper.make_tensor("axis2", TensorProto.INT64, [1], [2]),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("scale", TensorProto.FLOAT, [], [float("nan") if nan else 1.0]),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["mask", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["history", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["mask", "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["count1"]),
        helper.make_node("Div", ["total", "count1"], ["mean"]),
        helper.make_node("Mul", ["mean", "scale"], ["user"]),
    ]
    graph = helper.make_graph(nodes, "mean", [history, mask], [user], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def item_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Random unit vectors [n, dim]."""
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def write_tiny_model(
    path: Path,
    n_items: int = 30,
    dim: int = 8,
    seed: int = 0,
    onnx_bytes: bytes | None = None,
    vectors: np.ndarray | None = None,
) -> ModelMeta:
    """A complete model directory of items ``i0..`` with the mean encoder (manifest last)."""
    return write_model_dir(
        path,
        mean_encoder_onnx() if onnx_bytes is None else onnx_bytes,
        [f"i{i}" for i in range(n_items)],
        item_vectors(n_items, dim, seed) if vectors is None else vectors,
        max_len=10,
    )


def publish_tiny(repo: Path, **kwargs: object) -> tuple[int, ModelMeta]:
    """Write a tiny model as the repository's next version; returns its number and meta."""
    number, path = claim_next_version(repo)
    return number, write_tiny_model(path, **kwargs)  # type: ignore[arg-type]
