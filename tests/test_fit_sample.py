"""The pair fit's pixel sample: the same pixels as numpy's validity test and a sorted choice."""

from __future__ import annotations

import numpy as np
import pytest

from imagery.fit_sample import any_valid, sample_pixels


def _numpy_sample(before: np.ndarray, after: np.ndarray, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(before).all(axis=0) & np.isfinite(after).all(axis=0)
    idx = np.flatnonzero(ok)
    if idx.size > max_pixels:
        idx = np.sort(np.random.default_rng(0).choice(idx, max_pixels, replace=False))
    return before.reshape(before.shape[0], -1)[:, idx][:, None, :], after.reshape(after.shape[0], -1)[:, idx][
        :, None, :
    ]


@pytest.mark.parametrize("max_pixels", [500, 10_000, 100_000])
def test_sample_equals_the_numpy_formula(max_pixels: int) -> None:
    rng = np.random.default_rng(2)
    before = rng.random((6, 120, 150), dtype=np.float32)
    after = rng.random((6, 120, 150), dtype=np.float32)
    before[:, :10] = np.nan
    after[3, rng.random((120, 150)) < 0.2] = np.nan
    before[1, 50:60, 5] = np.inf
    got = sample_pixels(before, after, max_pixels)
    want = _numpy_sample(before, after, max_pixels)
    assert got[0].shape[-1] == min(max_pixels, want[0].shape[-1])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_any_valid_needs_one_pixel_finite_in_every_band() -> None:
    bands = np.full((6, 40, 30), np.nan, np.float32)
    assert not any_valid(bands)
    bands[:5, 39, 29] = 1.0  # one band still NaN there
    bands[5, 0, 0] = 1.0
    assert not any_valid(bands)
    bands[5, 39, 29] = 1.0
    assert any_valid(bands)
