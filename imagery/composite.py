"""Per-period composites: per-pixel median of the valid looks plus the count of valid looks."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

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
    look only when all its bands are, so the count is per pixel.
    """
    if not looks:
        raise ValueError("median_composite needs at least one look")
    stack = np.stack(looks)  # (looks, bands, y, x)
    pixel_valid = np.isfinite(stack).all(axis=1)
    stack[~np.broadcast_to(pixel_valid[:, None], stack.shape)] = np.nan
    count = pixel_valid.sum(axis=0).astype(np.uint8)
    if len(looks) == 1:
        return stack[0], count
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
        composite = np.nanmedian(stack, axis=0).astype(np.float32)
    return composite, count
