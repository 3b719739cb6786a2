"""Cloud, shadow and no-data masks from the Sentinel-2 scene classification layer (SCL)."""

from __future__ import annotations

import numba
import numpy as np

from imagery.config import MaskParams


def valid_mask(spectral: np.ndarray, scl: np.ndarray | None, params: MaskParams) -> np.ndarray:
    """True where every band has data and SCL is not a masked class (dilated by `dilate_px`).

    `spectral` is (bands, y, x) float32 with NaN for no data; `scl` is (y, x) uint8 or None
    (Level-1C: no cloud mask is applied, only no data).
    """
    valid = np.isfinite(spectral).all(axis=0)
    if scl is None:
        return valid
    return valid & clear_of_flags(scl, params)


def clear_of_flags(scl: np.ndarray, params: MaskParams) -> np.ndarray:
    """True where SCL is not a masked class, the flagged area dilated by `dilate_px` (a disk)."""
    masked = np.zeros(256, np.bool_)
    masked[np.asarray(params.scl_classes, dtype=np.uint8)] = True
    flagged = masked[np.asarray(scl, np.uint8)]
    clear = np.empty(flagged.shape, np.bool_)
    if params.dilate_px > 0 and flagged.any():
        _clear_of_dilated(flagged, params.dilate_px, clear)
    else:
        np.logical_not(flagged, out=clear)
    return clear


@numba.njit(cache=True, nogil=True)
def _clear_of_dilated(flagged: np.ndarray, radius: int, clear: np.ndarray) -> None:  # pragma: no cover
    """clear = not (flagged dilated by the disk x^2 + y^2 <= radius^2), nothing flagged off the array:
    per row, the distance to the nearest flagged pixel of that row; a pixel is flagged when some row
    dy away has one within the disk's half-width at dy."""
    ny, nx = flagged.shape
    far = radius + 1
    near = np.empty((ny, nx), np.uint8)  # capped at radius + 1 <= 21
    for y in range(ny):
        d = far
        for x in range(nx):
            d = 0 if flagged[y, x] else min(d + 1, far)
            near[y, x] = d
        d = far
        for x in range(nx - 1, -1, -1):
            d = 0 if flagged[y, x] else min(d + 1, far)
            near[y, x] = min(near[y, x], d)
    half = np.empty(2 * radius + 1, np.int32)
    for dy in range(-radius, radius + 1):
        w = 0
        while (w + 1) * (w + 1) + dy * dy <= radius * radius:
            w += 1
        half[dy + radius] = w
    for y in range(ny):
        clear[y, :] = True
        for dy in range(max(-radius, -y), min(radius, ny - 1 - y) + 1):
            w = half[dy + radius]
            for x in range(nx):
                clear[y, x] &= near[y + dy, x] > w
