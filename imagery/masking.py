"""Cloud, shadow and no-data masks from the Sentinel-2 scene classification layer (SCL)."""

from __future__ import annotations

import numpy as np

from imagery.config import MaskParams
from imagery.morphology import dilate, half_widths


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
    if params.dilate_px > 0 and flagged.any():
        return ~dilate(flagged, half_widths(_disk(params.dilate_px)))
    return ~flagged


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return np.asarray(xx * xx + yy * yy <= radius * radius)
