"""Each tile's clear-sky masks and NIR digital numbers, decoded once by the pair fit's tie-point
pass and kept on local scratch until the tile pass takes them, so neither is decoded twice.

The tie points need the NIR composite of every tile, the tile pass every band of it: without this
store the SCL and NIR blocks of every look were decoded in both (a quarter of all decoding). A
record holds one scene on one tile's padded window: whether the scene was skipped there, else its
clear-sky mask (bits) and its NIR digital numbers (raw uint16), read straight into the caller's
arrays. Records are named by a digest of everything that shaped them (code, mask settings, grid,
window, scene), so a record left by another run or another version is never taken, and each is
written atomically and deleted when taken. A run keeps at most `BUDGET_BYTES` of records (the
tiles beyond are decoded again), so the scratch does not grow with the area.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
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
#: Bytes of records a run keeps: all of a Lima-sized run's (1.03 GB). A larger run keeps those of its
#: first tiles only (the others are decoded again), so the scratch stays flat with the area and below
#: the kernel's dirty-page threshold (background writeback from 10 % of memory): past it, at 4x the
#: Lima area, writing the records cost the fit more CPU (+6.5 s) than decoding them again saved.
BUDGET_BYTES = 1_250 * 2**20
_SKIPPED, _CLEAR = b"\0", b"\1"


def record_bytes(pixels: int) -> int:
    """Bytes of one scene's record on a window of `pixels`: a kind byte, the mask bits, the NIR."""
    return 1 + (pixels + 7) // 8 + 2 * pixels


class _Budget:
    """Bytes the records of a run may still take (shared by the tie-point pass's threads)."""

    def __init__(self, nbytes: int) -> None:
        self.left = nbytes
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> bool:
        """Reserve `nbytes` if that many are left."""
        with self._lock:
            if nbytes > self.left:
                return False
            self.left -= nbytes
            return True


class KeptLooks:
    """The records of one period's scenes on one tile's padded window: `put` by the tie-point pass
    (with a `budget`), taken by the tile pass."""

    def __init__(self, paths: Sequence[Path], budget: _Budget | None) -> None:
        self.paths = list(paths)
        self.budget = budget

    def put(self, index: int, clear: np.ndarray | None, nir: np.ndarray) -> None:
        """Keep scene `index`: its clear mask (y, x) and NIR digital numbers (y, x) uint16, or that
        it was skipped on this window (`clear` None); nothing without a budget or beyond it."""
        nbytes = 1 if clear is None else record_bytes(clear.size)
        if self.budget is None or not self.budget.take(nbytes):
            return
        path = self.paths[index]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                if clear is None:
                    fh.write(_SKIPPED)
                else:
                    fh.write(_CLEAR)
                    fh.write(np.packbits(clear, axis=None).data)
                    fh.write(np.ascontiguousarray(nir, np.uint16).data)
            os.replace(tmp, path)
        except OSError:  # scratch full or not writable: the run goes on, the tile pass decodes it again
            self.budget.take(self.budget.left)
            with contextlib.suppress(OSError):
                tmp.unlink()

    def take(self, index: int, clear: np.ndarray, nir: np.ndarray) -> bool | None:
        """Scene `index` from its record, which is then deleted: None when there is no intact record
        (read the scene), False when the scene was skipped on this window, True when `clear` (y, x)
        bool and `nir` (a C-contiguous (y, x) uint16 plane) now hold it."""
        path = self.paths[index]
        fits = nir.shape == clear.shape and nir.dtype == np.uint16 and nir.flags.c_contiguous
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                kind = fh.read(1)
                if kind == _SKIPPED and size == 1:
                    taken: bool | None = False
                elif kind == _CLEAR and size == record_bytes(clear.size) and fits:
                    packed = np.empty((clear.size + 7) // 8, np.uint8)
                    fh.readinto(packed.data)
                    clear[...] = np.unpackbits(packed, count=clear.size).reshape(clear.shape)
                    fh.readinto(nir.data)
                    taken = True
                else:
                    taken = None
        except OSError:  # no record (or no readable one): read the scene
            return None
        path.unlink(missing_ok=True)
        return taken


class LookStore:
    """The kept looks of a run's tiles in `folder`, at most `budget_bytes` of them (see the module
    docstring)."""

    def __init__(self, folder: Path, plan: RunPlan, budget_bytes: int = BUDGET_BYTES) -> None:
        self.folder = Path(folder)
        self._budget: _Budget | None = _Budget(budget_bytes)
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
        window = [tile.row0, tile.col0, tile.height, tile.width]
        names = [
            f"{tile.name}-{json_digest([self._shared, window, scene])[:24]}.look"
            for scene in self._scenes[period]
        ]
        return KeptLooks([self.folder / name for name in names], self._budget if writing else None)

    def has_room(self, nbytes: int) -> bool:
        """Whether the budget still holds `nbytes` of records (a tile's, for the tie-point pass to
        read the whole tile for them, or only what its windows need when they would not be kept)."""
        return self._budget is not None and self._budget.left >= nbytes

    def __getstate__(self) -> dict[str, object]:
        """Sent to the tile pass's workers, which only take records: without the writers' budget."""
        return {**self.__dict__, "_budget": None}

    def clear(self) -> None:
        """Delete every record (those of tiles reused from a cache are never taken)."""
        shutil.rmtree(self.folder, ignore_errors=True)
