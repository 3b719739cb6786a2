"""Give freed heap memory back to the operating system between large steps of a run, keep it for
reuse within a step, and keep Python's cyclic garbage collector off the objects that live through
a step.

glibc keeps freed memory of mid-sized arrays (decoded blocks, window reads) in its per-thread
heaps, where long-lived neighbours pin it: after the pair fit and 28 Lima tiles on two threads the
process held 1.2 GiB resident for 0.5 GiB in use. `malloc_trim` returns it (measured: 0.5 GiB).
Between tiles the free memory is what the next tile allocates again, so there it is returned
only above a bound (`release_free_memory(keep_bytes)`): memory given back is faulted in and
zeroed again by the next tile. For the same reason `keep_freed_arrays` has glibc carve arrays
of any size a run makes from its heaps: by default it maps those above 32 MiB (a tile's look
stacks and composites) afresh each time and unmaps them when freed.

Python's full (oldest generation) collections scan every tracked object: ~260,000 after the
imports, the plan and the fit (modules, numba, pydantic, Dask), 0.1-0.2 CPU s each.
`long_lived_frozen` leaves the objects alive when a step starts out of the collections until it ends.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any


class _MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (all fields size_t)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")
    ]  # fmt: skip


#: glibc's `mallopt` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
#: Arrays up to this size come from the heap, not from fresh mappings (mallopt takes a C int).
HEAP_ARRAY_BYTES = 2**30
#: Free memory at the top of the heap kept at each `free` (returned by `release_free_memory`).
HEAP_TOP_KEPT_BYTES = 2**30


@cache
def _libc_call(name: str, restype: type | None = None) -> Any:
    """A function of the C library by name (a ctypes function), or None where there is none
    (not glibc: musl, macOS; or a glibc without it). Looked up among the symbols the process has
    loaded already: `ctypes.util.find_library` would fork `ldconfig` from a process of a GiB or more."""
    try:
        function = getattr(ctypes.CDLL(None), name, None)
    except OSError:
        return None
    if function is not None and restype is not None:
        function.restype = restype
    return function


def free_heap_bytes() -> int | None:
    """Bytes the heap holds free in all its arenas (glibc's mallinfo2), None where unknown."""
    info = _libc_call("mallinfo2", _MallInfo2)
    return None if info is None else int(info().fordblks)


def release_free_memory(keep_bytes: int = 0) -> bool:
    """Return the heap's free pages to the system (glibc) unless it holds at most `keep_bytes`
    free (0: always); True if it did, False where there is no such call or nothing to do."""
    trim = _libc_call("malloc_trim")
    if trim is None:
        return False
    if keep_bytes:
        free = free_heap_bytes()
        if free is not None and free <= keep_bytes:
            return False
    trim(0)
    return True


@cache  # once per process: the settings last
def keep_freed_arrays() -> bool:
    """Have glibc serve arrays of up to HEAP_ARRAY_BYTES from its heap and keep them there when
    freed, for the next tile to reuse, instead of mapping fresh pages the kernel zeroes on first
    touch; threads started from here on share one heap (a thread's own heap unmaps each 64 MiB
    part it empties). glibc's defaults cost ~2.5 CPU s of page faults in a Lima run
    (docs/performance.md). Process-wide and lasting (later calls do nothing), so best called
    before a run starts its threads; memory is still returned by `release_free_memory`. False
    where there is no `mallopt` (not glibc)."""
    mallopt = _libc_call("mallopt", ctypes.c_int)
    if mallopt is None:
        return False
    settings = (
        (_M_MMAP_THRESHOLD, HEAP_ARRAY_BYTES),
        (_M_TRIM_THRESHOLD, HEAP_TOP_KEPT_BYTES),
        (_M_ARENA_MAX, 1),
    )
    return all([bool(mallopt(param, value)) for param, value in settings])


@contextmanager
def long_lived_frozen() -> Iterator[None]:
    """Within the block, the objects alive on entry are skipped by the garbage collector (`gc.freeze`)
    and handed back to it on exit (`gc.unfreeze`); a no-op inside a block, or a program, that froze
    objects already (theirs stay frozen)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
