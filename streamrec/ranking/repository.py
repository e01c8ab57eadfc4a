"""A model repository: numbered version directories; the highest complete one is served.

::

    models/
      1/    a model directory (``ranking/modelfiles.py``), manifest.json written last
      2/
      3/    no manifest.json yet: being written, ignored

As in TF Serving and Triton, a version is a directory named by a decimal number. It is
*complete* when its ``manifest.json`` is present (the manifest is written last, atomically)
and every file it lists still has its checksum. Other names (``.tmp``, ``3.partial``) are
ignored. ``--model`` names either a repository or a single model directory (one that holds
``meta.json`` itself), which is served as before and never reloaded.

Publishing: ``claim_next_version`` creates the next number with ``mkdir`` (atomic: two
publishers never share a number), the files are written into it and the manifest last
(``streamrec train --repository``); ``publish`` copies an existing model directory the same
way (``streamrec publish``). By hand: copy the files into ``models/N/`` and write the manifest
last (``modelfiles.write_manifest``).

Pure file-system code (no onnxruntime): scanning is cheap (a directory listing and one
``stat`` per version); checksums are read only by ``verify_manifest`` and
``highest_complete``.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection
from pathlib import Path

from streamrec.errors import ModelError
from streamrec.ranking.modelfiles import (
    MANIFEST_FILE,
    META_FILE,
    MODEL_FILES,
    checksums,
    verify_manifest,
    write_manifest,
)


def is_model_dir(path: str | Path) -> bool:
    """True for a single model directory (it holds ``meta.json`` itself)."""
    return (Path(path) / META_FILE).is_file()


def is_repository(path: str | Path) -> bool:
    """True for an existing directory that is not itself a model directory."""
    return Path(path).is_dir() and not is_model_dir(path)


def versions(root: str | Path) -> list[int]:
    """The numbered version directories of a repository, ascending (complete or not)."""
    out = []
    for child in Path(root).iterdir():
        if child.name.isdecimal() and child.name.isascii() and child.is_dir():
            out.append(int(child.name))
    return sorted(out)


def version_path(root: str | Path, number: int) -> Path:
    """The directory of version ``number``."""
    return Path(root) / str(number)


def complete_versions(root: str | Path, above: int = 0, skip: Collection[int] = ()) -> list[int]:
    """Versions above ``above`` and not in ``skip`` whose manifest is present, highest first.

    Cheap (no checksum is read): the worker's poll thread calls it; ``verify_manifest``
    checks a candidate's files before it is loaded.
    """
    return [
        n
        for n in reversed(versions(root))
        if n > above and n not in skip and (version_path(root, n) / MANIFEST_FILE).is_file()
    ]


def highest_complete(
    root: str | Path, skip: Collection[int] = ()
) -> tuple[int, list[tuple[int, str]]]:
    """The highest version whose manifest is present and whose checksums match.

    Returns:
        the version, and the higher versions refused on the way (number, reason).

    Raises:
        ModelError: no version of the repository is complete.
    """
    refused: list[tuple[int, str]] = []
    for number in complete_versions(root, skip=skip):
        try:
            verify_manifest(version_path(root, number))
        except ModelError as exc:
            refused.append((number, str(exc)))
            continue
        return number, refused
    detail = "; ".join(f"{n}: {why}" for n, why in refused)
    raise ModelError(
        f"model repository {root} has no complete version (a numbered directory with a valid "
        f"{MANIFEST_FILE}; publish one with `streamrec train --repository`)"
        + (f"; refused {detail}" if detail else "")
    )


def claim_next_version(root: str | Path) -> tuple[int, Path]:
    """Create the directory of the next version number (atomic) and return it, empty.

    Raises:
        ModelError: ``root`` is a single model directory, not a repository.
    """
    base = Path(root)
    if is_model_dir(base):
        raise ModelError(f"{base} is a model directory, not a repository of versions")
    base.mkdir(parents=True, exist_ok=True)
    number = max(versions(base), default=0) + 1
    while True:
        path = version_path(base, number)
        try:
            path.mkdir()
        except FileExistsError:  # another publisher took it
            number += 1
            continue
        return number, path


def publish(src: str | Path, root: str | Path) -> int:
    """Copy the model directory ``src`` into the repository as its next version.

    The manifest is written last and records the *source's* checksums (verified first when
    the source has a manifest), so a copy that went wrong is refused by the worker.

    Returns:
        the version number.

    Raises:
        ModelError: ``src`` is not a model directory or fails its own manifest.
    """
    source = Path(src)
    if not is_model_dir(source):
        raise ModelError(f"{source} is not a model directory (it has no {META_FILE})")
    if (source / MANIFEST_FILE).is_file():
        verify_manifest(source)
    listed = checksums(source)
    number, target = claim_next_version(root)
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    write_manifest(target, listed)
    return number
