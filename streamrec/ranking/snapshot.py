"""Index snapshots: the item index and the catalog's new-item state, saved and loaded whole.

A snapshot is a directory ``index-<created unix ms, 15 digits>/`` under the snapshot root (the
format is documented in ``docs/SNAPSHOTS.md``)::

    graph.hnsw      the hnswlib graph (hnswlib's save_index format)
    arrays.npz      vectors, live, in_graph, centroid (the index) and content (new items)
    ids.json        {"ids": [...], "content_ids": [...], "vectored": [...]}
    manifest.json   format, identity, offsets, counts, each file's size and sha256; written last

It is written into a hidden temporary directory, every file fsynced, then renamed into place
(atomic) and the root fsynced: a crash leaves either the whole snapshot or none. Loading takes
the newest snapshot that passes every check: a manifest that parses and whose own checksum
holds, the format version, the identity (model version, dimension, catalog source), each
file's size and sha256, and the arrays agreeing with each other and with the graph. Anything
else is rejected with a reason (``corrupt``, ``format`` or ``foreign``) and never trusted.

The catalog offsets are opaque here (a ``{str: int}`` the caller chose): ranking knows
nothing of Kafka.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import hnswlib
import numpy as np

from streamrec.errors import ItemIndexError, SnapshotRejected
from streamrec.ranking.index import IndexState, ItemIndex

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PREFIX = "index-"
TMP_PREFIX = ".tmp-index-"
MANIFEST = "manifest.json"
GRAPH, ARRAYS, IDS = "graph.hnsw", "arrays.npz", "ids.json"
KEEP = 2  # snapshots kept (the newest, and one to fall back to)
_CHUNK = 1 << 20
_ROWS = 1 << 16  # vectors or ids written at a time


@dataclass(frozen=True, slots=True)
class SnapshotIdentity:
    """What a snapshot must match to be used.

    Attributes:
        model_version: the model's content version (``ModelMeta.version``).
        dim: the vector dimension.
        source: where the covered offsets point (the catalog topic's name).
        hnsw_m: the graph's degree (a changed setting rebuilds the graph).
        hnsw_ef_construction: the graph's build-time beam (likewise).
    """

    model_version: str
    dim: int
    source: str
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200


@dataclass(slots=True)
class NewItemState:
    """The new-item state the catalog built (``NewItemVectors.saved_state``)."""

    content: Mapping[str, np.ndarray] = field(default_factory=dict)
    vectored: list[str] = field(default_factory=list)


@dataclass(slots=True)
class LoadedSnapshot:
    """A snapshot that passed every check."""

    path: Path
    index: ItemIndex
    new_items: NewItemState
    offsets: dict[str, int]
    created_at: float


def write_snapshot(
    root: str | Path,
    identity: SnapshotIdentity,
    index: ItemIndex,
    new_items: NewItemState,
    offsets: Mapping[str, int],
    created_at: float,
    keep: int = KEEP,
) -> Path:
    """Write a snapshot atomically; drop all but the newest ``keep``. Returns its directory."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ms = int(created_at * 1000)
    final = root / f"{PREFIX}{ms:015d}"
    tmp = root / f"{TMP_PREFIX}{ms:015d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        state = index.export_state()  # views: written out before the index changes again
        index.save_graph(str(tmp / GRAPH))
        content_ids = sorted(new_items.content)
        arrays = {
            "vectors": state.vectors,
            "live": state.live,
            "in_graph": state.in_graph,
            "centroid": state.centroid,
        }
        content = _rows(new_items.content, content_ids, index.dim)
        _write_npz(tmp / ARRAYS, arrays, "content", (len(content_ids), index.dim), content)
        ids = {"ids": state.ids, "content_ids": content_ids, "vectored": new_items.vectored}
        _write_json_lists(tmp / IDS, ids)
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_version": identity.model_version,
            "dim": identity.dim,
            "source": identity.source,
            "hnsw_m": identity.hnsw_m,
            "hnsw_ef_construction": identity.hnsw_ef_construction,
            "offsets": {str(k): int(v) for k, v in offsets.items()},
            "created_at": created_at,
            "items": len(state.ids),
            "live": int(state.live.sum()),
            "files": {name: _describe(tmp / name) for name in (GRAPH, ARRAYS, IDS)},
        }
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        for name in (GRAPH, ARRAYS, IDS, MANIFEST):
            _fsync(tmp / name)
        _fsync(tmp)
        if final.exists():  # the same millisecond twice: the newer write wins
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(root, keep)
    return final


def _rows(vectors: Mapping[str, np.ndarray], ids: Sequence[str], dim: int) -> Iterator[np.ndarray]:
    """``vectors`` of ``ids`` as float32 blocks of up to ``_ROWS`` rows, in order."""
    for start in range(0, len(ids), _ROWS):
        chunk = ids[start : start + _ROWS]
        yield np.asarray([vectors[i] for i in chunk], dtype=np.float32).reshape(len(chunk), dim)


def _write_npz(
    path: Path,
    arrays: Mapping[str, np.ndarray],
    name: str,
    shape: tuple[int, int],
    blocks: Iterator[np.ndarray],
) -> None:
    """What ``np.savez`` writes (``np.load`` reads it), without copies: each array written in
    numpy's buffered pieces, and ``name`` (float32 of ``shape``) from ``blocks`` of rows (at
    1M items, a whole copy of the vectors or of the content vectors is 256 MiB of RSS)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, array in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(array), allow_pickle=False)
        with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
            header = {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                "fortran_order": False,
                "shape": shape,
            }
            np.lib.format.write_array_header_1_0(out, header)
            rows = 0
            for block in blocks:
                out.write(block.tobytes())
                rows += len(block)
            if rows != shape[0]:
                raise ValueError(f"{name}: {rows} rows written, {shape[0]} announced")


def _write_json_lists(path: Path, lists: Mapping[str, Sequence[str]]) -> None:
    """``json.dumps(lists)`` written a slice at a time (not one string of every id)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("{")
        for n, (key, values) in enumerate(lists.items()):
            f.write(("," if n else "") + json.dumps(key) + ":[")
            for start in range(0, len(values), _ROWS):
                part = json.dumps(list(values[start : start + _ROWS]), ensure_ascii=False)
                f.write(("," if start else "") + part[1:-1])
            f.write("]")
        f.write("}")


def list_snapshots(root: str | Path) -> list[Path]:
    """Snapshot directories under ``root``, newest first (temporary ones excluded)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and p.is_dir()]
    return sorted(found, key=lambda p: p.name, reverse=True)


def load_newest(
    root: str | Path,
    identity: SnapshotIdentity,
    ef_search: int,
    on_reject: Callable[[Path, SnapshotRejected], None] = lambda path, exc: None,
) -> LoadedSnapshot | None:
    """The newest snapshot under ``root`` that passes every check (module docstring), or
    None; each rejected one is reported to ``on_reject`` and skipped."""
    for path in list_snapshots(root):
        try:
            return load_snapshot(path, identity, ef_search)
        except SnapshotRejected as exc:
            on_reject(path, exc)
    return None


def load_snapshot(path: Path, identity: SnapshotIdentity, ef_search: int) -> LoadedSnapshot:
    """Load one snapshot directory.

    Raises:
        SnapshotRejected: it fails a check (module docstring).
    """
    manifest = _read_manifest(path)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SnapshotRejected("format", f"format {manifest.get('format_version')!r}")
    for what in ("model_version", "dim", "source", "hnsw_m", "hnsw_ef_construction"):
        a, b = manifest.get(what), getattr(identity, what)
        if a != b:
            raise SnapshotRejected("foreign", f"{what} {a!r}, expected {b!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {GRAPH, ARRAYS, IDS}:
        raise SnapshotRejected("corrupt", "the manifest does not list the snapshot's files")
    for name, want in files.items():
        if _describe(path / name) != want:
            raise SnapshotRejected("corrupt", f"{name} does not match its size or checksum")
    try:
        return _build(path, manifest, ef_search)
    except (ValueError, KeyError, TypeError, OSError, RuntimeError, ItemIndexError) as exc:
        raise SnapshotRejected("corrupt", f"{type(exc).__name__}: {exc}") from exc


def _build(path: Path, manifest: dict, ef_search: int) -> LoadedSnapshot:
    dim = int(manifest["dim"])
    with np.load(path / ARRAYS, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in ("vectors", "live", "in_graph", "centroid", "content")}
    ids = json.loads((path / IDS).read_text(encoding="utf-8"))
    item_ids, content_ids = ids["ids"], ids["content_ids"]
    if not all(isinstance(i, str) for i in (*item_ids, *content_ids, *ids["vectored"])):
        raise ValueError("ids must be strings")
    if len(item_ids) != manifest["items"] or arrays["content"].shape != (len(content_ids), dim):
        raise ValueError("counts differ from the manifest")
    if arrays["vectors"].dtype != np.float32 or arrays["live"].dtype != bool:
        raise ValueError("unexpected array types")
    graph = hnswlib.Index(space="ip", dim=dim)
    in_graph = arrays["in_graph"].astype(bool)
    # new items take deleted items' places (``streamrec.ranking.index``); a graph saved
    # without that option (hnswlib keeps no trace of it in the file) loads the same
    graph.load_index(
        str(path / GRAPH), max_elements=max(16, int(in_graph.sum())), allow_replace_deleted=True
    )
    if (graph.M, graph.ef_construction) != (manifest["hnsw_m"], manifest["hnsw_ef_construction"]):
        raise ValueError(f"the graph has M={graph.M}, ef_construction={graph.ef_construction}")
    state = IndexState(
        list(item_ids),
        np.ascontiguousarray(arrays["vectors"]),
        arrays["live"].copy(),
        in_graph,
        arrays["centroid"].astype(np.float32),
    )
    index = ItemIndex.from_state(state, graph, ef_search)
    content = {item_id: arrays["content"][row] for row, item_id in enumerate(content_ids)}
    offsets = {str(k): int(v) for k, v in manifest["offsets"].items()}
    return LoadedSnapshot(
        path, index, NewItemState(content, list(ids["vectored"])), offsets, manifest["created_at"]
    )


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SnapshotRejected("corrupt", f"manifest unreadable: {type(exc).__name__}") from exc
    if not isinstance(manifest, dict) or manifest.get("manifest_sha256") != _manifest_digest(
        manifest
    ):
        raise SnapshotRejected("corrupt", "manifest checksum mismatch")
    return manifest


def _manifest_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _describe(path: Path) -> dict[str, object]:
    """Size and sha256 of a file ({"bytes": -1} when it is missing)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        size = path.stat().st_size
    except OSError:
        return {"bytes": -1}
    return {"bytes": size, "sha256": digest.hexdigest()}


def _fsync(path: Path) -> None:
    """fsync a file or a directory (its entries: the rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(root: Path, keep: int) -> None:
    """Drop all but the newest ``keep`` snapshots, and temporary directories left by crashes
    of other processes (older than an hour: never one being written now)."""
    for old in list_snapshots(root)[max(keep, 1) :]:
        shutil.rmtree(old, ignore_errors=True)
    cutoff = time.time() - 3600
    for tmp in root.glob(f"{TMP_PREFIX}*"):
        try:
            if tmp.stat().st_mtime < cutoff:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def total_bytes(path: Path, names: Sequence[str] = (GRAPH, ARRAYS, IDS, MANIFEST)) -> int:
    """The size of a snapshot on disk."""
    return sum((path / n).stat().st_size for n in names if (path / n).exists())
