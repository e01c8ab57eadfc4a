"""The model directory's manifest and the model repository's scanning and publishing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_models import publish_tiny, write_tiny_model

from streamrec.errors import ModelError
from streamrec.ranking.modelfiles import (
    MANIFEST_FILE,
    META_FILE,
    VECTORS_FILE,
    read_model_dir,
    verify_manifest,
)
from streamrec.ranking.repository import (
    claim_next_version,
    complete_versions,
    highest_complete,
    is_model_dir,
    is_repository,
    publish,
    version_path,
    versions,
)


def _corrupt(path: Path, name: str = VECTORS_FILE) -> None:
    data = bytearray((path / name).read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    (path / name).write_bytes(bytes(data))


def test_export_writes_a_manifest_last_and_read_checks_it(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "m")
    body = json.loads((tmp_path / "m" / MANIFEST_FILE).read_text())
    assert {META_FILE, VECTORS_FILE, "encoder.onnx", "item_ids.json"} <= set(body["files"])
    verify_manifest(tmp_path / "m")
    assert read_model_dir(tmp_path / "m").meta.num_items == 30
    _corrupt(tmp_path / "m")
    with pytest.raises(ModelError, match=r"checksum mismatch in item_vectors\.npy"):
        read_model_dir(tmp_path / "m")


def test_a_directory_without_manifest_is_still_read_as_before(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "m")
    (tmp_path / "m" / MANIFEST_FILE).unlink()
    assert read_model_dir(tmp_path / "m").meta.dim == 8
    with pytest.raises(ModelError, match="incomplete"):
        verify_manifest(tmp_path / "m")


def test_rewriting_a_directory_drops_its_old_manifest_first(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "m", seed=1)
    first = (tmp_path / "m" / MANIFEST_FILE).read_text()
    write_tiny_model(tmp_path / "m", seed=2)
    assert (tmp_path / "m" / MANIFEST_FILE).read_text() != first
    verify_manifest(tmp_path / "m")


def test_a_listed_file_missing_is_refused(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "m")
    (tmp_path / "m" / VECTORS_FILE).unlink()
    with pytest.raises(ModelError, match="missing"):
        verify_manifest(tmp_path / "m")


def test_repository_or_single_directory(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "single")
    publish_tiny(tmp_path / "repo")
    assert is_model_dir(tmp_path / "single") and not is_repository(tmp_path / "single")
    assert is_repository(tmp_path / "repo") and not is_model_dir(tmp_path / "repo")
    assert not is_repository(tmp_path / "missing")


def test_the_highest_complete_version_is_chosen(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for seed in range(3):
        publish_tiny(repo, seed=seed)
    (repo / "notes").mkdir()  # not a number: ignored
    (repo / "7.partial").mkdir()
    assert versions(repo) == [1, 2, 3]
    assert highest_complete(repo) == (3, [])
    assert complete_versions(repo, above=1) == [3, 2]
    assert complete_versions(repo, above=1, skip={3}) == [2]


def test_an_incomplete_version_is_ignored(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    publish_tiny(repo, seed=0)
    number, _ = publish_tiny(repo, seed=1)
    (version_path(repo, number) / MANIFEST_FILE).unlink()  # still being written
    claim_next_version(repo)  # an empty version 3
    assert versions(repo) == [1, 2, 3]
    assert complete_versions(repo) == [1]
    assert highest_complete(repo) == (1, [])


def test_a_checksum_mismatch_is_refused_and_the_next_lower_chosen(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    publish_tiny(repo, seed=0)
    number, _ = publish_tiny(repo, seed=1)
    _corrupt(version_path(repo, number))
    chosen, refused = highest_complete(repo)
    assert chosen == 1
    assert [n for n, _ in refused] == [2]
    assert "checksum mismatch" in refused[0][1]


def test_no_complete_version_is_a_clear_error(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    claim_next_version(repo)
    with pytest.raises(ModelError, match="no complete version"):
        highest_complete(repo)


def test_claim_takes_the_next_free_number(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert claim_next_version(repo)[0] == 1
    (repo / "5").mkdir()
    number, path = claim_next_version(repo)
    assert number == 6 and path == repo / "6" and path.is_dir()


def test_claim_refuses_a_single_model_directory(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "m")
    with pytest.raises(ModelError, match="not a repository"):
        claim_next_version(tmp_path / "m")


def test_publish_copies_with_the_sources_checksums(tmp_path: Path) -> None:
    meta = write_tiny_model(tmp_path / "m", seed=4)
    repo = tmp_path / "repo"
    assert publish(tmp_path / "m", repo) == 1
    assert publish(tmp_path / "m", repo) == 2
    copy = read_model_dir(version_path(repo, 2))
    assert copy.meta.version == meta.version
    np.testing.assert_array_equal(copy.item_vectors, read_model_dir(tmp_path / "m").item_vectors)
    _corrupt(tmp_path / "m")
    with pytest.raises(ModelError, match="checksum"):
        publish(tmp_path / "m", repo)
    assert versions(repo) == [1, 2], "a source failing its own manifest claims no version"
