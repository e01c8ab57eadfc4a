"""Give freed heap memory back to the operating system (glibc's ``malloc_trim``).

Loading an index snapshot, writing one and swapping in a compacted graph allocate and free
hundreds of MiB of short-lived buffers at 1,000,000 items; glibc keeps much of what is freed in
the process's heap, so the worker's RSS stays at its peak. ``release_free_memory`` asks the
allocator to return it: at 1M items x d = 64, right after a start from a snapshot, 1,218 MiB ->
1,057 MiB (``benchmarks/memory.py``). It takes milliseconds and is called between batches only
after those rare steps. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _find_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        return None
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _find_trim()


def release_free_memory() -> bool:
    """Return free heap pages to the operating system; whether the allocator could try
    (False where there is no ``malloc_trim``: not glibc)."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
