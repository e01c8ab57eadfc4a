"""The model directory: the one contract between training (torch) and serving (onnxruntime).

A model directory holds::

    meta.json          ModelMeta below (format_version, version, dim, max_len, ...)
    encoder.onnx       the sequence encoder (fp32); optionally encoder.int8.onnx
    item_vectors.npy   float32 [num_items, dim], row i is the vector of item_ids[i]
    item_ids.json      JSON list of item id strings (opaque ids, as on the topics)
    manifest.json      written last: the SHA-256 and size of every other file (a directory
                       without one is read as before; one whose files differ is refused)

The encoder's ONNX signature (dynamic batch B and history length T <= max_len)::

    inputs:  history  float32 [B, T, dim]  item vectors of the history, oldest first,
                                            left-padded with zero vectors
             mask     float32 [B, T]       1.0 for a real item, 0.0 for padding
    output:  user     float32 [B, dim]     the user vector

The score of item i for a user is ``user @ item_vectors[i]`` (inner product, higher is
better). Because the encoder takes vectors rather than ids, an item added to the catalog
after training can appear in histories as soon as it has a vector.

A directory is complete once ``manifest.json`` exists: it is written last, atomically (a
temporary file renamed), so a reader that sees it sees every file it names; ``verify_manifest``
checks that they still hold what was written. A model repository (``ranking/repository.py``)
serves only complete versions.

This module is pure (numpy + json), importable without torch or onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.errors import ModelError

FORMAT_VERSION = 1
META_FILE = "meta.json"
ENCODER_FILE = "encoder.onnx"
ENCODER_INT8_FILE = "encoder.int8.onnx"
VECTORS_FILE = "item_vectors.npy"
IDS_FILE = "item_ids.json"
MANIFEST_FILE = "manifest.json"
MODEL_FILES = (META_FILE, ENCODER_FILE, ENCODER_INT8_FILE, VECTORS_FILE, IDS_FILE)
INPUT_HISTORY = "history"
INPUT_MASK = "mask"
OUTPUT_USER = "user"


@dataclass(frozen=True)
class ModelMeta:
    """What serving needs to know about a trained model.

    Attributes:
        version: content hash of the encoder and vectors; goes into every recommendation.
        dim: vector dimension.
        max_len: longest history the encoder reads (older events are dropped).
        num_items: rows of item_vectors.npy.
        format_version: version of this directory layout.
        extra: free-form training facts (data path, seed, epochs, metrics, ...).
    """

    version: str
    dim: int
    max_len: int
    num_items: int
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelFiles:
    """A loaded model directory (without the ONNX session)."""

    path: Path
    meta: ModelMeta
    item_ids: list[str]
    item_vectors: np.ndarray

    def encoder_path(self, int8: bool = False) -> Path:
        """Path of the fp32 (default) or int8 encoder."""
        return self.path / (ENCODER_INT8_FILE if int8 else ENCODER_FILE)


def content_version(onnx_bytes: bytes, vectors: np.ndarray, item_ids: list[str]) -> str:
    """A stable version string derived from the model's content."""
    digest = hashlib.sha256()
    digest.update(onnx_bytes)
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    digest.update(json.dumps(item_ids).encode())
    return "sasrec-" + digest.hexdigest()[:12]


def write_model_dir(
    path: str | Path,
    onnx_bytes: bytes,
    item_ids: list[str],
    item_vectors: np.ndarray,
    max_len: int,
    extra: dict[str, Any] | None = None,
    int8_onnx_bytes: bytes | None = None,
) -> ModelMeta:
    """Write a complete model directory and return its metadata."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(item_ids):
        raise ModelError(f"item_vectors shape {vectors.shape} does not match {len(item_ids)} ids")
    if len(set(item_ids)) != len(item_ids):
        raise ModelError("item_ids contains duplicates")
    meta = ModelMeta(
        version=content_version(onnx_bytes, vectors, item_ids),
        dim=int(vectors.shape[1]),
        max_len=int(max_len),
        num_items=len(item_ids),
        extra=dict(extra or {}),
    )
    # an old manifest would vouch for files about to change: the directory is incomplete
    # until the new one is written, last
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    (out / ENCODER_FILE).write_bytes(onnx_bytes)
    if int8_onnx_bytes is not None:
        (out / ENCODER_INT8_FILE).write_bytes(int8_onnx_bytes)
    np.save(out / VECTORS_FILE, vectors)
    (out / IDS_FILE).write_text(json.dumps(item_ids))
    (out / META_FILE).write_text(json.dumps(asdict(meta), indent=2, sort_keys=True))
    write_manifest(out)
    return meta


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksums(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{file: {"sha256": ..., "bytes": ...}}`` of the model files present in ``path``."""
    root = Path(path)
    return {
        name: {"sha256": file_sha256(root / name), "bytes": (root / name).stat().st_size}
        for name in MODEL_FILES
        if (root / name).is_file()
    }


def write_manifest(path: str | Path, files: dict[str, dict[str, Any]] | None = None) -> None:
    """Write ``manifest.json`` (last, atomically): the checksums of the directory's files.

    Args:
        path: the model directory, every other file already written.
        files: checksums to record (default: computed now from the files); ``publish`` passes
            the source's, so that a copy that differs from its source is refused.
    """
    root = Path(path)
    listed = checksums(root) if files is None else files
    if META_FILE not in listed or ENCODER_FILE not in listed:
        raise ModelError(f"model directory {root} has no {META_FILE} or {ENCODER_FILE}")
    body = {"format_version": FORMAT_VERSION, "files": listed}
    tmp = root / (MANIFEST_FILE + ".tmp")
    with tmp.open("w") as f:
        f.write(json.dumps(body, indent=2, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / MANIFEST_FILE)


def verify_manifest(path: str | Path) -> None:
    """Check every file ``manifest.json`` lists against its size and SHA-256.

    Raises:
        ModelError: no manifest, an unreadable one, a listed file missing, or a mismatch.
    """
    root = Path(path)
    try:
        body = json.loads((root / MANIFEST_FILE).read_text())
        listed = body["files"]
        items = [(str(n), str(f["sha256"]), int(f["bytes"])) for n, f in listed.items()]
    except FileNotFoundError:
        raise ModelError(f"model directory {root} has no {MANIFEST_FILE} (incomplete)") from None
    except (ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
        raise ModelError(f"{root / MANIFEST_FILE} is unreadable: {exc}") from exc
    for name, sha, size in items:
        file = root / name
        if name not in MODEL_FILES or not file.is_file():
            raise ModelError(f"model directory {root}: {name} listed in the manifest is missing")
        if file.stat().st_size != size or file_sha256(file) != sha:
            raise ModelError(f"model directory {root}: checksum mismatch in {name}")


def read_model_dir(path: str | Path) -> ModelFiles:
    """Read and validate a model directory (its manifest's checksums first, when it has one).

    Raises:
        ModelError: a file is missing, differs from the manifest, or the files disagree.
    """
    root = Path(path)
    if (root / MANIFEST_FILE).is_file():
        verify_manifest(root)
    for name in (META_FILE, ENCODER_FILE, VECTORS_FILE, IDS_FILE):
        if not (root / name).is_file():
            raise ModelError(
                f"model directory {root} has no {name} (train one with `streamrec train`)"
            )
    try:
        raw = json.loads((root / META_FILE).read_text())
        meta = ModelMeta(**raw)
        item_ids = json.loads((root / IDS_FILE).read_text())
        vectors = np.load(root / VECTORS_FILE).astype(np.float32, copy=False)
    except (ValueError, TypeError, OSError) as exc:
        raise ModelError(f"model directory {root} is unreadable: {exc}") from exc
    if meta.format_version != FORMAT_VERSION:
        raise ModelError(
            f"model format {meta.format_version} unsupported (expected {FORMAT_VERSION})"
        )
    if vectors.shape != (meta.num_items, meta.dim) or len(item_ids) != meta.num_items:
        raise ModelError(
            f"model directory {root} is inconsistent: vectors {vectors.shape}, "
            f"{len(item_ids)} ids, meta says {meta.num_items}x{meta.dim}"
        )
    return ModelFiles(
        path=root, meta=meta, item_ids=[str(i) for i in item_ids], item_vectors=vectors
    )
