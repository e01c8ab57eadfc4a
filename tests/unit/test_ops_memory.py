"""``release_free_memory`` returns freed heap pages to the OS on glibc (a no-op elsewhere)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from streamrec.ops.memory import release_free_memory


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_freed_small_objects_go_back_to_the_os() -> None:
    # many small blocks under glibc's mmap threshold, freed all but every 64th: the heap keeps
    # the pages (RSS stays) until it is trimmed
    blocks = [bytearray(4000) for _ in range(40_000)]  # ~160 MB, each touched
    kept = blocks[::64]
    del blocks
    before = _rss()
    assert release_free_memory()
    assert _rss() < before - 50 * 1024 * 1024
    assert kept
