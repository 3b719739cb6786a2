from __future__ import annotations

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage
from shapely.geometry import shape

from imagery.outlines import label_outlines

EIGHT = np.ones((3, 3), bool)


def _canonical(pieces: list[shapely.Geometry]) -> str:
    union = shapely.union_all(shapely.make_valid(np.asarray(pieces, dtype=object)))
    return str(shapely.normalize(shapely.simplify(union, 0)).wkt)


def test_outlines_cover_each_patch_as_gdal_polygonize_does() -> None:
    # Random masks full of holes, diagonal contacts and patches on the edges: each 8-connected
    # patch's polygons are its pixels, the same outline (once made valid, merged and normalised)
    # as from GDAL's polygonize.
    rng = np.random.default_rng(11)
    for _ in range(60):
        h, w = rng.integers(1, 60, 2)
        labels, n = ndimage.label(rng.random((h, w)) < rng.uniform(0.2, 0.8), structure=EIGHT)
        labels = labels.astype(np.int32)
        numbers, polygons = label_outlines(labels, row0=40)
        ours: dict[int, list[shapely.Geometry]] = {}
        for number, polygon in zip(numbers.tolist(), polygons, strict=True):
            ours.setdefault(number, []).append(polygon)
        gdal: dict[int, list[shapely.Geometry]] = {}
        shapes = rasterio.features.shapes(
            labels, mask=labels > 0, connectivity=8, transform=Affine.translation(0, 40)
        )
        for geom, value in shapes:
            gdal.setdefault(int(value), []).append(shape(geom))
        assert sorted(ours) == sorted(gdal) == list(range(1, n + 1))
        for number, pieces in ours.items():
            assert _canonical(pieces) == _canonical(gdal[number])
            assert shapely.union_all(shapely.make_valid(np.asarray(pieces))).area == (labels == number).sum()


def test_a_ring_with_a_hole_and_corner_contacts() -> None:
    labels = np.zeros((6, 7), np.int32)
    labels[1:5, 1:5] = 3  # a square ring around one pixel, with a pixel touching it at a corner
    labels[2:4, 2:4] = 0
    labels[2, 2] = 3
    labels[5, 5] = 3
    numbers, polygons = label_outlines(labels)
    assert numbers.tolist() == [3, 3]
    ring, corner = polygons
    assert ring.is_valid and len(ring.interiors) == 1 and ring.area == 13
    assert corner.equals(shapely.box(5, 5, 6, 6))
    empty_numbers, empty_polygons = label_outlines(np.zeros((3, 4), np.int32))
    assert empty_numbers.size == 0 and empty_polygons.size == 0
