"""Cloud, shadow and no-data masks from the Sentinel-2 scene classification layer (SCL)."""

from __future__ import annotations

import numba
import numpy as np

from imagery.config import MaskParams
from imagery.morphology import disk, erode, half_widths


def valid_mask(spectral: np.ndarray, scl: np.ndarray | None, params: MaskParams) -> np.ndarray:
    """True where every band has data and SCL is not a masked class (dilated by `dilate_px`).

    `spectral` is (bands, y, x) float32 with NaN for no data; `scl` is (y, x) uint8 or None
    (Level-1C: no cloud mask is applied, only no data).
    """
    valid = np.isfinite(spectral).all(axis=0)
    if scl is None:
        return valid
    return valid & clear_of_flags(scl, params)


def clear_of_flags(scl: np.ndarray, params: MaskParams, out: np.ndarray | None = None) -> np.ndarray:
    """True where SCL is not a masked class, the flagged area dilated by `dilate_px` (a disk), into
    `out` when given (C-contiguous bool, scl's shape): the clear pixels eroded, which is the same."""
    clear = np.ones(256, np.bool_)
    clear[np.asarray(params.scl_classes, dtype=np.uint8)] = False
    if out is None:
        out = np.empty(np.shape(scl), np.bool_)
    elif out.shape != np.shape(scl) or out.dtype != np.bool_ or not out.flags.c_contiguous:
        raise ValueError(
            f"clear_of_flags: out must be C-contiguous bool {np.shape(scl)}, got {out.dtype} {out.shape}"
        )
    _look_up(clear, np.ascontiguousarray(scl, np.uint8).reshape(-1), out.reshape(-1))
    if params.dilate_px > 0:
        erode(out, half_widths(disk(params.dilate_px)), out=out)
    return out


@numba.njit(cache=True, nogil=True)
def _look_up(table: np.ndarray, codes: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """out[i] = table[codes[i]] for uint8 codes and a 256-entry table (np.take without its checks:
    half the time on a Lima tile)."""
    for i in range(codes.size):
        out[i] = table[codes[i]]
