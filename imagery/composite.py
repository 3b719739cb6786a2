"""Per-period composites: per-pixel median of the valid looks plus the count of valid looks."""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np


def merge_same_day(looks: Sequence[np.ndarray]) -> np.ndarray:
    """One look from overlapping granules of the same day: first valid value wins, never counted twice."""
    merged = looks[0].copy()
    for look in looks[1:]:
        hole = np.isnan(merged)
        merged[hole] = look[hole]
    return merged


def median_composite(looks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Median of valid (non-NaN) looks per pixel and band, and the valid-look count per pixel.

    `looks` are (bands, y, x) float32 arrays with NaN where a look is masked. A pixel is valid in a
    look only when all its bands are, so the count is per pixel. Same values as `np.nanmedian`
    over the valid looks (float32), in one pass without sorting the whole stack.
    """
    if len(looks) == 0:
        raise ValueError("median_composite needs at least one look")
    stack = np.stack([np.asarray(look, np.float32) for look in looks])  # (looks, bands, y, x)
    composite = np.empty(stack.shape[1:], np.float32)
    count = np.empty(stack.shape[2:], np.uint8)
    _median_of_valid_looks(stack, composite, count)
    return composite, count


@numba.njit(cache=True, nogil=True)
def _median_of_valid_looks(stack: np.ndarray, out: np.ndarray, count: np.ndarray) -> None:  # pragma: no cover
    n_looks, n_bands, ny, nx = stack.shape
    ok = np.empty(n_looks, np.bool_)
    buf = np.empty(n_looks, np.float32)
    half = np.float32(2.0)
    for y in range(ny):
        for x in range(nx):
            valid = 0
            for look in range(n_looks):
                good = True
                for b in range(n_bands):
                    if not np.isfinite(stack[look, b, y, x]):
                        good = False
                        break
                ok[look] = good
                valid += good
            count[y, x] = valid
            for b in range(n_bands):
                if valid == 0:
                    out[b, y, x] = np.nan
                    continue
                m = 0
                for look in range(n_looks):
                    if ok[look]:
                        v = stack[look, b, y, x]
                        i = m
                        while i > 0 and buf[i - 1] > v:
                            buf[i] = buf[i - 1]
                            i -= 1
                        buf[i] = v
                        m += 1
                if m % 2 == 1:
                    out[b, y, x] = buf[m // 2]
                else:
                    out[b, y, x] = (buf[m // 2 - 1] + buf[m // 2]) / half
