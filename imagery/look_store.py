"""Each tile's clear-sky masks and NIR digital numbers, decoded once by the pair fit's tie-point
pass and kept on local scratch until the tile pass takes them, so neither is decoded twice.

The tie points need the NIR composite of every tile, the tile pass every band of it: without this
store the SCL and NIR blocks of every look were decoded in both (a quarter of all decoding). A
record holds one scene on one tile's padded window: whether the scene was skipped there, else its
clear-sky mask (bits) and its NIR digital numbers (raw uint16), read straight into the caller's
arrays. Records are named by a digest of everything that shaped them (code, mask settings, grid,
window, scene), so a record left by another run or another version is never taken, and each is
written atomically and deleted when taken.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from imagery.digests import json_digest, pixel_code_digest

if TYPE_CHECKING:
    from imagery.grid import Tile
    from imagery.pipeline import RunPlan

#: The band whose digital numbers are kept: the tie points' band.
KEPT_BAND = "B08"
_SKIPPED, _CLEAR = b"\0", b"\1"


class KeptLooks:
    """The records of one period's scenes on one tile's padded window: `put` by the tie-point pass
    (when `writing`), taken by the tile pass."""

    def __init__(self, paths: Sequence[Path], writing: bool) -> None:
        self.paths = list(paths)
        self.writing = writing

    def put(self, index: int, clear: np.ndarray | None, nir: np.ndarray) -> None:
        """Keep scene `index`: its clear mask (y, x) and NIR digital numbers (y, x) uint16, or that
        it was skipped on this window (`clear` None); nothing unless `writing`."""
        if not self.writing:
            return
        path = self.paths[index]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            if clear is None:
                fh.write(_SKIPPED)
            else:
                fh.write(_CLEAR)
                fh.write(np.packbits(clear, axis=None).data)
                fh.write(np.ascontiguousarray(nir, np.uint16).data)
        os.replace(tmp, path)

    def take(self, index: int, clear: np.ndarray, nir: np.ndarray) -> bool | None:
        """Scene `index` from its record, which is then deleted: None when there is no intact record
        (read the scene), False when the scene was skipped on this window, True when `clear` (y, x)
        bool and `nir` (a C-contiguous (y, x) uint16 plane) now hold it."""
        path = self.paths[index]
        n_bits = (clear.size + 7) // 8
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                kind = fh.read(1)
                if kind == _SKIPPED and size == 1:
                    taken: bool | None = False
                elif kind == _CLEAR and size == 1 + n_bits + nir.nbytes and nir.flags.c_contiguous:
                    packed = np.empty(n_bits, np.uint8)
                    fh.readinto(packed.data)
                    clear[...] = np.unpackbits(packed, count=clear.size).reshape(clear.shape)
                    fh.readinto(nir.data)
                    taken = True
                else:
                    taken = None
        except FileNotFoundError:
            return None
        path.unlink(missing_ok=True)
        return taken


class LookStore:
    """The kept looks of a run's tiles in `folder` (see the module docstring)."""

    def __init__(self, folder: Path, plan: RunPlan) -> None:
        self.folder = Path(folder)
        self._shared = json_digest(
            {
                "code": pixel_code_digest(),
                "band": KEPT_BAND,
                "mask": plan.settings.mask.model_dump(mode="json"),
                "grid": plan.grid.model_dump(mode="json"),
                "halo": plan.halo,
            }
        )
        self._scenes = {
            "before": [json_digest(s.model_dump(mode="json")) for s in plan.before],
            "after": [json_digest(s.model_dump(mode="json")) for s in plan.after],
        }

    def looks(self, tile: Tile, period: Literal["before", "after"], *, writing: bool) -> KeptLooks:
        """The records of `period`'s scenes on `tile`'s padded window (to be written: `writing`)."""
        if writing:
            self.folder.mkdir(parents=True, exist_ok=True)
        window = [tile.row0, tile.col0, tile.height, tile.width]
        names = [
            f"{tile.name}-{json_digest([self._shared, window, scene])[:24]}.look"
            for scene in self._scenes[period]
        ]
        return KeptLooks([self.folder / name for name in names], writing)

    def clear(self) -> None:
        """Delete every record (those of tiles reused from a cache are never taken)."""
        shutil.rmtree(self.folder, ignore_errors=True)
