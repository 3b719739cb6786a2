"""Raster files kept open between reads, so neighbouring tiles reuse the blocks GDAL has already
decoded (a tile's halo lies in its neighbours' blocks) instead of decoding them again."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import rasterio

#: Open files kept per process (a run reads 7 bands x a few looks per period).
MAX_OPEN = 96

_Key = tuple[str, tuple[int, int]]


class Opened(NamedTuple):
    """An open dataset and the key of this version of its file (None for URLs: read afresh)."""

    dataset: rasterio.io.DatasetReader
    key: _Key | None


class OpenRasters:
    """Local files opened once and shared by the threads of a process, one lock per dataset (a GDAL
    dataset must not be read by two threads at once). A file that changed on disk (size or
    modification time) is opened afresh; the least recently used files are closed beyond `size`.
    URLs are opened for each read, so every read sees the server (its faults, its retries)."""

    def __init__(self, size: int = MAX_OPEN) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._open: OrderedDict[_Key, tuple[rasterio.io.DatasetReader, threading.Lock]] = OrderedDict()

    @contextmanager
    def reading(self, href: str) -> Iterator[Opened]:
        """The open dataset of `href` and its key, held exclusively for the block; opened on first
        use (inside the caller's rasterio.Env), errors as from `rasterio.open`."""
        stamp = _stamp(href)
        if stamp is None:
            with rasterio.open(href) as dataset:
                yield Opened(dataset, None)
            return
        key = (href, stamp)
        with self._lock:
            entry = self._open.pop(key, None)
            if entry is None:
                entry = (rasterio.open(href), threading.Lock())
            self._open[key] = entry
            while len(self._open) > self.size:
                _, (old, old_lock) = self._open.popitem(last=False)
                with old_lock:
                    old.close()
        dataset, lock = entry
        with lock:
            yield Opened(dataset, key)

    def __len__(self) -> int:
        """Files open now."""
        return len(self._open)

    def close(self) -> None:
        """Close every kept dataset."""
        with self._lock:
            while self._open:
                _, (old, old_lock) = self._open.popitem()
                with old_lock:
                    old.close()


def _stamp(href: str) -> tuple[int, int] | None:
    """Size and modification time of a local file (None for URLs and missing files)."""
    try:
        st = os.stat(href)
    except (OSError, ValueError):
        return None
    return (st.st_size, st.st_mtime_ns)
