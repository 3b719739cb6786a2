"""Tiles given row by row reassembled into full-width row strips, each handed out as soon as every
tile covering it has been given: a strip-wise pass over a mosaic while it is being written."""

from __future__ import annotations

import numpy as np

from imagery.components import strip_bounds


class TileStrips:
    """Full-width strips of `strip_rows` rows (the last may be shorter; as `strip_bounds` cuts them)
    of a `height` x `width` mosaic, assembled from tiles given in row order (`RunPlan.tiles`: by
    first row, then column). Pixels no tile covers hold `fill`. Memory holds the strips the
    current row of tiles overlaps, whatever the area."""

    def __init__(self, height: int, width: int, strip_rows: int, dtype: np.dtype | type, fill: float) -> None:
        self.width = width
        self.bounds = strip_bounds(height, strip_rows)
        self._dtype = np.dtype(dtype)
        self._fill = fill
        self._open: dict[int, np.ndarray] = {}
        self._next = 0
        self._last_row0 = 0

    def add(self, row0: int, col0: int, data: np.ndarray) -> list[np.ndarray]:
        """Paste a tile's pixels at (`row0`, `col0`); returns the strips it completed, top first:
        those ending at or above its first row (no later tile reaches them)."""
        if row0 < self._last_row0:
            raise ValueError(f"tile at row {row0} after one at row {self._last_row0}: expected row order")
        self._last_row0 = row0
        done = self._complete_to(row0)
        row1 = row0 + data.shape[0]
        for index in range(self._next, len(self.bounds)):
            s0, s1 = self.bounds[index]
            if s0 >= row1:
                break
            if s1 <= row0:
                continue
            if index not in self._open:
                self._open[index] = self._blank(index)
            strip = self._open[index]
            r0, r1 = max(s0, row0), min(s1, row1)
            strip[r0 - s0 : r1 - s0, col0 : col0 + data.shape[1]] = data[r0 - row0 : r1 - row0]
        return done

    def finish(self) -> list[np.ndarray]:
        """The strips not handed out yet, top first (all tiles have been given)."""
        return self._complete_to(self.bounds[-1][1] if self.bounds else 0)

    def _complete_to(self, row: int) -> list[np.ndarray]:
        done = []
        while self._next < len(self.bounds) and self.bounds[self._next][1] <= row:
            strip = self._open.pop(self._next, None)
            done.append(strip if strip is not None else self._blank(self._next))
            self._next += 1
        return done

    def _blank(self, index: int) -> np.ndarray:
        s0, s1 = self.bounds[index]
        return np.full((s1 - s0, self.width), self._fill, self._dtype)
