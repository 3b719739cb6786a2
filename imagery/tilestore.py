"""Finished tiles on disk: one file per tile, written atomically, so a rerun can reuse them.

A tile file is numpy's `.npy` records one after another (score, classes, looks before, looks
after, stage seconds) and a last one holding the CRC-32 of their data: no zip container, whose
Python-level copying cost more than the arrays' own write and read. A reused tile is checked
against its CRC (bit rot is recomputed, not published); publish reads the tiles of its own run
without the check."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from imagery.export import atomic_path
from imagery.pipeline import TileResult

_FIELDS = ("score", "classes", "looks_before", "looks_after")


def tile_path(folder: Path, name: str) -> Path:
    """Where a tile's result lives."""
    return folder / f"{name}.tile"


def save_tile(result: TileResult, path: Path) -> Path:
    """Write a tile result atomically (a crash never leaves a readable half tile)."""
    arrays = [np.ascontiguousarray(getattr(result, f)) for f in _FIELDS]
    arrays.append(np.asarray(json.dumps(result.seconds)))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for array in arrays:
            np.save(fh, array, allow_pickle=False)
        np.save(fh, np.asarray([_crc32(arrays)], np.uint32), allow_pickle=False)
    return path


def load_tile(path: Path, *, verify: bool = True) -> TileResult | None:
    """A saved tile, or None when it is missing, unreadable or (with `verify`) not what was written."""
    try:
        with open(path, "rb") as fh:
            arrays = [_record(fh) for _ in range(len(_FIELDS) + 1)]
            (crc,) = _record(fh)
            if fh.read(1):
                return None
    except (OSError, ValueError, EOFError):
        return None
    if verify and _crc32(arrays) != int(crc):
        return None
    try:
        seconds = json.loads(str(arrays[-1]))
    except json.JSONDecodeError:
        return None
    score, classes, looks_before, looks_after = arrays[: len(_FIELDS)]
    return TileResult(score, classes, looks_before, looks_after, seconds)


def _crc32(arrays: list[np.ndarray]) -> int:
    """CRC-32 of the arrays' data, one after another."""
    crc = 0
    for array in arrays:
        crc = zlib.crc32(array.data, crc)
    return crc


def _record(fh: BinaryIO) -> np.ndarray:
    """The next `.npy` record of an open tile file (no pickles)."""
    return np.load(fh, allow_pickle=False)
