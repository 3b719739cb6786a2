from __future__ import annotations

import numpy as np
from scipy import ndimage

from imagery.morphology import dilate, disk, erode, half_widths


def test_dilation_and_erosion_equal_scipy_for_disks_and_squares() -> None:
    rng = np.random.default_rng(11)
    structures = [disk(1, 0), disk(1, 1), disk(2, 2), disk(3, 0), disk(3, 3), np.ones((5, 5), bool)]
    for _ in range(40):
        shape = tuple(int(n) for n in rng.integers(1, 50, 2))
        mask = rng.random(shape) < rng.uniform(0.0, 0.6)
        for structure in structures:
            half = half_widths(structure)
            np.testing.assert_array_equal(dilate(mask, half), ndimage.binary_dilation(mask, structure))
            np.testing.assert_array_equal(
                erode(mask, half), ndimage.binary_erosion(mask, structure, border_value=1)
            )


def test_half_widths_of_adisk() -> None:
    assert half_widths(disk(3, 0)).tolist() == [0, 2, 2, 3, 2, 2, 0]
    assert half_widths(np.ones((3, 3), bool)).tolist() == [1, 1, 1]


def test_sparse_masks_with_empty_rows_and_in_place_results_equal_scipy() -> None:
    mask = np.zeros((60, 80), bool)
    mask[0, 79] = mask[59, 40] = mask[31, 2] = True  # lone pixels on the edges, rows left empty
    mask[20:24, 10:14] = mask[20, 70:80] = True
    for structure in (disk(1, 0), disk(3, 0), disk(9, 0), np.ones((5, 5), bool)):
        half = half_widths(structure)
        for image in (mask, ~mask, np.random.default_rng(4).random(mask.shape) < 0.5):
            expected = ndimage.binary_dilation(image, structure)
            np.testing.assert_array_equal(dilate(image, half), expected)
            in_place = image.copy()
            assert dilate(in_place, half, out=in_place) is in_place
            np.testing.assert_array_equal(in_place, expected)
            expected = ndimage.binary_erosion(image, structure, border_value=1)
            in_place = image.copy()
            np.testing.assert_array_equal(erode(in_place, half, out=in_place), expected)


def test_arrays_narrower_than_the_structure_equal_scipy() -> None:
    rng = np.random.default_rng(12)
    for _ in range(60):
        mask = rng.random(tuple(int(n) for n in rng.integers(1, 12, 2))) < rng.uniform(0.0, 0.5)
        for structure in (disk(5, 0), disk(8, 0)):
            half = half_widths(structure)
            np.testing.assert_array_equal(dilate(mask, half), ndimage.binary_dilation(mask, structure))
            np.testing.assert_array_equal(
                erode(mask, half), ndimage.binary_erosion(mask, structure, border_value=1)
            )
