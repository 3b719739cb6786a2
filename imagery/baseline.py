"""The textbook reference detector: change vector analysis on z-scored band differences + Otsu."""

from __future__ import annotations

import numpy as np
from skimage.filters import threshold_otsu


def cva_otsu(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Changed (True) where the magnitude of the z-scored difference vector exceeds Otsu's cut.

    `before`/`after` are (bands, y, x) on the same grid; NaN pixels are never changed.
    """
    diff = after.astype(np.float32) - before.astype(np.float32)
    valid = np.isfinite(diff).all(axis=0)
    d = diff[:, valid]
    z = (d - d.mean(axis=1, keepdims=True)) / (d.std(axis=1, keepdims=True) + 1e-12)
    magnitude = np.sqrt((z * z).sum(axis=0))
    changed = np.zeros(valid.shape, bool)
    changed[valid] = magnitude > threshold_otsu(magnitude)
    return changed
