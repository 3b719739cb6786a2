"""Binary dilation and erosion by disk-like structuring elements, as numba passes."""

from __future__ import annotations

import numba
import numpy as np


def disk(radius: int, slack: int = 0) -> np.ndarray:
    """The (2r+1, 2r+1) disk y^2 + x^2 <= r^2 + slack (slack r makes the 3x3 square at r = 1)."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return np.asarray(yy * yy + xx * xx <= radius * radius + slack)


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
    if half.max() >= 255:  # distances are kept as uint8 up to the reach + 1
        raise ValueError(f"dilate/erode: structures up to 509 px wide, got half-width {half.max()}")
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
    per row the distance to the nearest set pixel (capped at the reach + 1), then per row offset
    the half-width test. Only the span of a row from its first to its last set pixel (widened by
    the reach) is visited; rows with nothing set add nothing. The distances are taken one offset
    at a time (vectorised passes along the row, not a scan). `mask` is read only in the first
    pass, so `out` may be `mask`."""
    ny, nx = mask.shape
    radius = (half.size - 1) // 2
    reach = int(max(half.max(), 0)) + 1  # distances beyond the widest half-width are all alike
    far = np.uint8(reach)
    near = np.empty((ny, nx), np.uint8)
    first = np.full(ny, nx, np.intp)  # first and last set pixel of each row (nx, -1: none)
    last = np.full(ny, -1, np.intp)
    for y in range(ny):
        row, dist = mask[y], near[y]
        if not _any_set(row, invert):
            continue
        lo = 0
        while row[lo] == invert:
            lo += 1
        hi = nx - 1
        while row[hi] == invert:
            hi -= 1
        first[y], last[y] = lo, hi
        start, end = max(lo - reach, 0), min(hi + reach, nx - 1)
        _distance_zero(row[start : end + 1], invert, far, dist[start : end + 1])
        for j in range(1, reach):  # a set pixel j to the left, then j to the right
            n = end + 1 - (lo + j)  # (counts, not slice ends: a negative end would count from the back)
            if n > 0:
                _distance_at(row[lo : lo + n], invert, np.uint8(j), far, dist[lo + j : lo + j + n])
            n = hi + 1 - (start + j)
            if n > 0:
                _distance_at(
                    row[start + j : start + j + n], invert, np.uint8(j), far, dist[start : start + n]
                )
    for y in range(ny):
        row = out[y]
        row[:] = False
        for dy in range(max(-radius, -y), min(radius, ny - 1 - y) + 1):
            w = half[dy + radius]
            if w < 0 or last[y + dy] < 0:
                continue
            x0, x1 = max(first[y + dy] - w, 0), min(last[y + dy] + w, nx - 1) + 1
            _within(near[y + dy, x0:x1], np.uint8(w), row[x0:x1])
        if invert:
            for x in range(nx):
                row[x] = not row[x]


@numba.njit(cache=True, nogil=True, inline="always")
def _distance_zero(
    row: np.ndarray, invert: bool, far: np.uint8, dist: np.ndarray
) -> None:  # pragma: no cover
    """dist = 0 where the row is set, `far` elsewhere."""
    for x in range(dist.size):
        dist[x] = 0 if row[x] != invert else far


@numba.njit(cache=True, nogil=True, inline="always")
def _distance_at(
    row: np.ndarray, invert: bool, step: np.uint8, far: np.uint8, dist: np.ndarray
) -> None:  # pragma: no cover
    """dist = min(dist, step) where `row` (the row shifted by `step`) is set."""
    for x in range(dist.size):
        dist[x] = min(dist[x], step if row[x] != invert else far)


@numba.njit(cache=True, nogil=True, inline="always")
def _within(dist: np.ndarray, reach: np.uint8, out: np.ndarray) -> None:  # pragma: no cover
    """out |= dist <= reach."""
    for x in range(out.size):
        out[x] |= dist[x] <= reach


@numba.njit(cache=True, nogil=True, inline="always")
def _any_set(row: np.ndarray, invert: bool) -> bool:  # pragma: no cover
    """Whether any pixel of the row is set (a reduction without an early exit: it vectorises)."""
    found = False
    for x in range(row.size):
        found |= row[x] != invert
    return found
