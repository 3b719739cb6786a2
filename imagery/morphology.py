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


def dilate(mask: np.ndarray, half: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """`ndimage.binary_dilation(mask, structure)` for the structure of `half` (nothing beyond the
    array), into `out` when given (a C-contiguous bool array of mask's shape; it may be `mask`)."""
    return _run(mask, half, False, out)


def erode(mask: np.ndarray, half: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """`ndimage.binary_erosion(mask, structure, border_value=1)`: everything beyond the array is
    set; into `out` when given (as for `dilate`)."""
    return _run(mask, half, True, out)


def _run(mask: np.ndarray, half: np.ndarray, invert: bool, out: np.ndarray | None) -> np.ndarray:
    mask = np.ascontiguousarray(mask, np.bool_)
    if out is None:
        out = np.empty(mask.shape, np.bool_)
    elif out.shape != mask.shape or out.dtype != np.bool_ or not out.flags.c_contiguous:
        raise ValueError(
            f"dilate/erode: out must be C-contiguous bool {mask.shape}, got {out.dtype} {out.shape}"
        )
    _dilate(mask, half, invert, out)
    return out


@numba.njit(cache=True, nogil=True)
def _dilate(mask: np.ndarray, half: np.ndarray, invert: bool, out: np.ndarray) -> None:  # pragma: no cover
    """out = dilation of (mask, or ~mask if `invert`) by the structure, negated back if `invert`:
    per row the distance to the nearest set pixel, then per row offset the half-width test. Only
    the span of a row from its first to its last set pixel (widened by the reach) is visited; rows
    with nothing set add nothing. `mask` is read only in the first pass, so `out` may be `mask`."""
    ny, nx = mask.shape
    radius = (half.size - 1) // 2
    far = int(max(half.max(), 0)) + 1
    near = np.empty((ny, nx), np.int32)
    first = np.full(ny, nx, np.intp)  # first and last set pixel of each row (nx, -1: none)
    last = np.full(ny, -1, np.intp)
    for y in range(ny):
        row, dist = mask[y], near[y]
        lo = 0
        while lo < nx and row[lo] == invert:
            lo += 1
        if lo == nx:
            continue
        hi = nx - 1
        while row[hi] == invert:
            hi -= 1
        first[y], last[y] = lo, hi
        start, end = max(lo - far, 0), min(hi + far, nx - 1)
        dist[start:lo] = far
        d = far
        for x in range(lo, end + 1):
            d = 0 if row[x] != invert else min(d + 1, far)
            dist[x] = d
        d = far
        for x in range(hi, start - 1, -1):
            d = 0 if row[x] != invert else min(d + 1, far)
            dist[x] = min(dist[x], d)
    for y in range(ny):
        row = out[y]
        row[:] = False
        for dy in range(max(-radius, -y), min(radius, ny - 1 - y) + 1):
            w = half[dy + radius]
            if w < 0 or last[y + dy] < 0:
                continue
            dist = near[y + dy]
            for x in range(max(first[y + dy] - w, 0), min(last[y + dy] + w, nx - 1) + 1):
                row[x] |= dist[x] <= w
        if invert:
            for x in range(nx):
                row[x] = not row[x]
