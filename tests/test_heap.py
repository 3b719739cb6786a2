"""Returning free heap memory between tiles only above a bound (glibc)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from imagery.heap import free_heap_bytes, release_free_memory


def test_free_memory_is_returned_only_above_the_bound() -> None:
    if free_heap_bytes() is None:
        pytest.skip("not glibc: no mallinfo2/malloc_trim here")
    # 64 KiB arrays come from the heap (below glibc's mmap threshold); freeing every other one
    # leaves holes the heap keeps
    arrays = [np.ones(8192) for _ in range(400)]
    before = free_heap_bytes()
    del arrays[::2]
    free = free_heap_bytes()
    assert free is not None and before is not None and free >= before + 10 * 2**20
    assert not release_free_memory(keep_bytes=free + 2**30)  # under the bound: kept
    kept = _resident_bytes()
    assert release_free_memory(keep_bytes=2**20)  # above it: returned
    assert _resident_bytes() < kept - 8 * 2**20
    assert release_free_memory()  # no bound: always
    assert len(arrays) == 200


def _resident_bytes() -> int:
    """This process's resident memory (Linux, where glibc is)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
