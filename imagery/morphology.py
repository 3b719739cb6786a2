"""Binary dilation and erosion by disk-like structuring elements, as numba passes."""

from __future__ import annotations

import numba
import numpy as np


def half_widths(structure: np.ndarray) -> np.ndarray:
    """Per row of a (2r+1, 2r+1) structuring element symmetric about its centre whose rows are
    centred runs (a disk, a square), the run's half-width (-1 for an empty row)."""
    r = structure.shape[0] // 2
    out = np.full(2 * r + 1, -1, np.int32)
    for dy in range(2 * r + 1):
        row = np.flatnonzero(structure[dy])
        if row.size:
            out[dy] = r - row[0]
    return out


def dilate(mask: np.ndarray, half: np.ndarray) -> np.ndarray:
    """`ndimage.binary_dilation(mask, structure)` for the structure of `half` (nothing beyond the array)."""
    out = np.empty(mask.shape, np.bool_)
    _dilate(np.ascontiguousarray(mask, np.bool_), half, False, out)
    return out


def erode(mask: np.ndarray, half: np.ndarray) -> np.ndarray:
    """`ndimage.binary_erosion(mask, structure, border_value=1)`: everything beyond the array is set."""
    out = np.empty(mask.shape, np.bool_)
    _dilate(np.ascontiguousarray(mask, np.bool_), half, True, out)
    return out


@numba.njit(cache=True, nogil=True)
def _dilate(mask: np.ndarray, half: np.ndarray, invert: bool, out: np.ndarray) -> None:  # pragma: no cover
    """out = dilation of (mask, or ~mask if `invert`) by the structure, negated back if `invert`:
    per row the distance to the nearest set pixel, then per row offset the half-width test."""
    ny, nx = mask.shape
    radius = (half.size - 1) // 2
    far = int(max(half.max(), 0)) + 1
    near = np.empty((ny, nx), np.int32)
    for y in range(ny):
        d = far
        for x in range(nx):
            d = 0 if mask[y, x] != invert else min(d + 1, far)
            near[y, x] = d
        d = far
        for x in range(nx - 1, -1, -1):
            d = 0 if mask[y, x] != invert else min(d + 1, far)
            near[y, x] = min(near[y, x], d)
    for y in range(ny):
        out[y, :] = False
        for dy in range(max(-radius, -y), min(radius, ny - 1 - y) + 1):
            w = half[dy + radius]
            if w < 0:
                continue
            for x in range(nx):
                out[y, x] |= near[y + dy, x] <= w
        if invert:
            for x in range(nx):
                out[y, x] = not out[y, x]
