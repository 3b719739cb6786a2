from __future__ import annotations

import numpy as np

from imagery.composite import median_composite
from imagery.config import MaskParams
from imagery.masking import clear_of_flags, valid_mask


def test_scl_classes_are_masked_and_dilated() -> None:
    spectral = np.ones((6, 20, 20), np.float32)
    scl = np.full((20, 20), 4, np.uint8)
    scl[10, 10] = 9
    scl[0, 0] = 3
    scl[19, 19] = 11  # snow: not masked by default
    valid = valid_mask(spectral, scl, MaskParams(dilate_px=2))
    assert not valid[10, 10] and not valid[10, 12] and not valid[12, 10]
    assert valid[10, 13] and valid[19, 19]
    assert not valid[0, 0]
    assert valid_mask(spectral, scl, MaskParams(dilate_px=0)).sum() == 400 - 2


def test_dilation_equals_binary_dilation_with_a_disk() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(5)
    for shape, radius in (((90, 70), 3), ((31, 45), 1), ((40, 40), 6), ((5, 9), 2)):
        scl = np.where(rng.random(shape) < 0.01, 9, 4).astype(np.uint8)
        scl[0, -1] = 3  # flagged on the edge: nothing is flagged beyond the array
        yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        disk = xx * xx + yy * yy <= radius * radius
        expected = ~ndimage.binary_dilation(np.isin(scl, (3, 9)), structure=disk)
        got = clear_of_flags(scl, MaskParams(scl_classes=(3, 9), dilate_px=radius))
        np.testing.assert_array_equal(got, expected)


def test_no_scl_masks_only_missing_data() -> None:
    spectral = np.ones((6, 4, 4), np.float32)
    spectral[3, 1, 1] = np.nan
    valid = valid_mask(spectral, None, MaskParams())
    assert valid.sum() == 15 and not valid[1, 1]


def test_median_composite_counts_valid_looks() -> None:
    looks = [np.full((6, 2, 2), v, np.float32) for v in (0.1, 0.2, 0.9)]
    looks[2][:, 0, 0] = np.nan
    looks[1][4, 1, 1] = np.nan  # one band missing invalidates the whole look at that pixel
    comp, count = median_composite(looks)
    assert count.tolist() == [[2, 3], [3, 2]]
    assert comp[0, 0, 1] == np.float32(0.2)
    assert comp[0, 0, 0] == np.float32(0.15000001) or abs(comp[0, 0, 0] - 0.15) < 1e-6
    assert abs(comp[0, 1, 1] - 0.5) < 1e-6


def test_same_day_granules_merge_without_double_counting() -> None:
    a = np.full((6, 2, 2), np.nan, np.float32)
    a[:, 0, :] = 0.1
    b = np.full((6, 2, 2), 0.3, np.float32)
    c = np.full((6, 2, 2), 0.9, np.float32)
    comp, count = median_composite([a, b, c], days=[7, 7, 8])
    # first valid granule of day 7 (a where it has data, else b), with day 8 once each
    np.testing.assert_allclose(comp[0], [[0.5, 0.5], [0.6, 0.6]], rtol=1e-6)
    assert count.tolist() == [[2, 2], [2, 2]]
    comp, count = median_composite([a, b], days=[7, 7])
    np.testing.assert_allclose(comp[0], [[0.1, 0.1], [0.3, 0.3]], rtol=1e-6)
    assert count.max() == 1


def test_clear_mask_excludes_looks_like_missing_data() -> None:
    looks = np.stack([np.full((6, 3, 3), v, np.float32) for v in (0.1, 0.2, 0.9)])
    clear = np.ones((3, 3, 3), bool)
    clear[2, 1, 1] = False  # cloud on the third look
    clear[:, 0, 0] = False  # cloud on every look
    comp, count = median_composite(looks, clear=clear)
    assert count[1, 1] == 2 and count[2, 2] == 3 and count[0, 0] == 0
    assert abs(comp[3, 1, 1] - 0.15) < 1e-6 and comp[3, 2, 2] == np.float32(0.2)
    assert np.isnan(comp[:, 0, 0]).all()


def test_median_composite_equals_numpy_nanmedian_of_the_valid_looks() -> None:
    import warnings

    rng = np.random.default_rng(0)
    for n_looks in (1, 2, 3, 4, 5, 6):
        looks = [rng.random((6, 40, 50), dtype=np.float32) for _ in range(n_looks)]
        for look in looks:
            look[rng.random(look.shape) < 0.1] = np.nan
        stack = np.stack(looks)
        pixel_valid = np.isfinite(stack).all(axis=1)
        stack[~np.broadcast_to(pixel_valid[:, None], stack.shape)] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(stack, axis=0).astype(np.float32)
        comp, count = median_composite(looks)
        np.testing.assert_array_equal(comp, expected)
        np.testing.assert_array_equal(count, pixel_valid.sum(axis=0))
        assert comp.dtype == np.float32 and count.dtype == np.uint8


def test_digital_numbers_give_the_nanmedian_of_their_reflectance() -> None:
    """A uint16 stack with per-look offsets: the same bits as np.nanmedian over `to_reflectance`."""
    import warnings

    from imagery.sources.raster import to_reflectance

    rng = np.random.default_rng(11)
    for n_looks in (1, 2, 3, 4, 5):
        dn = rng.integers(0, 14000, (n_looks, 6, 30, 40)).astype(np.uint16)
        dn[rng.random(dn.shape) < 0.05] = 0  # no data
        offsets = [(0.0, -1000.0)[i % 2] for i in range(n_looks)]
        clear = rng.random((n_looks, 30, 40)) < 0.9
        reflectance = np.stack([to_reflectance(d, o) for d, o in zip(dn, offsets, strict=True)])
        valid = np.isfinite(reflectance).all(axis=1) & clear
        masked = np.where(valid[:, None], reflectance, np.float32(np.nan))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(masked, axis=0).astype(np.float32)
        comp, count = median_composite(dn, clear=clear, boa_offsets=offsets)
        np.testing.assert_array_equal(comp.view(np.uint32), expected.view(np.uint32))  # bit for bit
        np.testing.assert_array_equal(count, valid.sum(axis=0))
        days = [1, 1, *range(2, n_looks)][:n_looks]  # two granules of one day
        want = median_composite(reflectance, clear=clear, days=days)
        got = median_composite(dn, clear=clear, days=days, boa_offsets=offsets)
        np.testing.assert_array_equal(got[0].view(np.uint32), want[0].view(np.uint32))
        np.testing.assert_array_equal(got[1], want[1])


def test_three_looks_with_one_offset_give_the_nanmedian_of_their_reflectance() -> None:
    """Three uint16 looks of three days with one offset (every period of a Lima run): the same bits
    as np.nanmedian over `to_reflectance`, for every count of valid looks (0-3: no data in one
    band, clouds), ties and the whole uint16 range."""
    import warnings

    from imagery.sources.raster import to_reflectance

    rng = np.random.default_rng(23)
    for offset in (0.0, -1000.0):
        dn = rng.integers(0, 65536, (3, 6, 50, 70)).astype(np.uint16)
        dn[:, :, :10] = rng.integers(1000, 1004, (3, 6, 10, 70))  # ties
        dn[rng.random(dn.shape) < 0.03] = 0  # no data in single bands
        clear = rng.random((3, 50, 70)) < 0.7
        reflectance = np.stack([to_reflectance(d, offset) for d in dn])
        valid = np.isfinite(reflectance).all(axis=1) & clear
        assert {int(n) for n in np.unique(valid.sum(axis=0))} == {0, 1, 2, 3}
        masked = np.where(valid[:, None], reflectance, np.float32(np.nan))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(masked, axis=0).astype(np.float32)
        comp, count = median_composite(dn, clear=clear, days=[3, 1, 2], boa_offsets=[offset] * 3)
        np.testing.assert_array_equal(comp.view(np.uint32), expected.view(np.uint32))  # bit for bit
        np.testing.assert_array_equal(count, valid.sum(axis=0))
        # the general path (reflectance in) agrees, and so do two granules of one day
        for days in ([3, 1, 2], [1, 1, 2]):
            want = median_composite(reflectance, clear=clear, days=days)
            got = median_composite(dn, clear=clear, days=days, boa_offsets=[offset] * 3)
            np.testing.assert_array_equal(got[0].view(np.uint32), want[0].view(np.uint32))
            np.testing.assert_array_equal(got[1], want[1])
