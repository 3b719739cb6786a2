"""The pixels the pair fit is fitted on: the fit window's jointly valid pixels, subsampled.

Validity is one compiled pass over the bands of both periods (numpy's 12 `isfinite` passes and
their reductions took ~0.1 s of CPU on a 2048 px window), and the subsample is kept in pixel order
by marking its picks instead of sorting them; the sample is the same, pixel for pixel."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def jointly_valid(before: np.ndarray, after: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """(y, x) mask of the pixels finite in every band of both (bands, y, x) stacks."""
    p, ny, nx = before.shape
    ok = np.ones((ny, nx), np.bool_)
    for stack in (before, after):
        for k in range(p):
            for i in range(ny):
                for j in range(nx):
                    if not np.isfinite(stack[k, i, j]):
                        ok[i, j] = False
    return ok


@numba.njit(cache=True, nogil=True)
def any_valid(bands: np.ndarray) -> bool:  # pragma: no cover - compiled
    """Whether some pixel of a (bands, y, x) stack is finite in every band (stops at the first)."""
    p, ny, nx = bands.shape
    for i in range(ny):
        for j in range(nx):
            k = 0
            while k < p and np.isfinite(bands[k, i, j]):
                k += 1
            if k == p:
                return True
    return False


def sample_pixels(
    before: np.ndarray, after: np.ndarray, max_pixels: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Jointly valid pixels of a window as (bands, 1, n) arrays, in pixel order; a seeded random
    subset of `max_pixels` of them when there are more (``choice`` of their positions, then kept in
    order: the sorted choice)."""
    idx = np.flatnonzero(jointly_valid(before, after))
    if idx.size > max_pixels:
        picked = np.zeros(idx.size, np.bool_)
        picked[np.random.default_rng(seed).choice(idx.size, max_pixels, replace=False)] = True
        idx = idx[picked]
    b = before.reshape(before.shape[0], -1)[:, idx][:, None, :]
    a = after.reshape(after.shape[0], -1)[:, idx][:, None, :]
    return b, a
