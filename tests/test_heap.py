"""Returning free heap memory between tiles only above a bound (glibc); objects kept out of the
garbage collector during a step."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest

from imagery.heap import free_heap_bytes, long_lived_frozen, release_free_memory


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


class _Node:
    """An object that can sit in a reference cycle and be watched through a weak reference."""

    other: object = None


def _garbage_cycle() -> weakref.ref[_Node]:
    """A reference cycle nothing else refers to (only the cyclic collector frees it)."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_objects_alive_on_entry_are_left_to_the_collector_only_after_the_block() -> None:
    if gc.get_freeze_count():
        pytest.skip("objects already frozen in this process")
    old = _Node()
    old.other = old
    watch_old = weakref.ref(old)
    with long_lived_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with long_lived_frozen():  # nested: the outer block's freeze stands
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
        del old
        watch_new = _garbage_cycle()
        gc.collect()
        assert watch_new() is None  # made inside the block: collected as usual
        assert watch_old() is not None  # alive on entry: skipped by the collector
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert watch_old() is None


_FAULTS_OF_A_NEW_ARRAY = """
import resource
import numpy as np
from imagery.heap import keep_freed_arrays

def faults() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(64 * 2**20 // 8)  # 64 MiB: above glibc's largest default mmap threshold (32 MiB)
    del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

fresh = min(faults() for _ in range(3))
assert keep_freed_arrays()
faults()  # carved from the heap once
print(fresh, max(faults() for _ in range(3)))
"""

_HEAPS_OF_NEW_THREADS = """
import ctypes, sys, threading
import numpy as np
from imagery.heap import keep_freed_arrays

if sys.argv[1] == "kept":
    assert keep_freed_arrays()
arrays = []
together = threading.Barrier(3)


def allocate() -> None:
    arrays.append(np.ones(2**20))
    together.wait()  # all three alive at once: by default each has an arena of its own


threads = [threading.Thread(target=allocate) for _ in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
sys.stderr.flush()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per heap, on stderr
"""


def test_freed_arrays_are_reused_instead_of_faulted_in_afresh() -> None:
    if free_heap_bytes() is None:
        pytest.skip("not glibc: no mallopt here")
    # a fresh process: the setting is process-wide and other tests' runs have made it here already
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_OF_A_NEW_ARRAY], capture_output=True, text=True, check=True
    )
    fresh, kept = (int(n) for n in out.stdout.split())
    assert fresh >= 32  # 64 MiB in pages of at most 2 MiB, each zeroed by the kernel on first touch
    assert kept * 8 <= fresh


def test_threads_started_after_keep_freed_arrays_share_one_heap() -> None:
    if free_heap_bytes() is None:
        pytest.skip("not glibc: no mallopt here")

    def heaps(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _HEAPS_OF_NEW_THREADS, mode], capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        return sum(line.startswith("Arena ") for line in run.stderr.splitlines())

    assert heaps("default") >= 4  # the main heap and one per thread
    assert heaps("kept") == 1
