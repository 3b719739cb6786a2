from __future__ import annotations

import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox
from shapely.geometry import box

from imagery.aoi import from_geometry, load_aoi
from imagery.grid import clip_geobox, run_geobox, tile_anchor, tiles


def test_lima_grid_is_utm_10m_snapped() -> None:
    gbox = run_geobox(load_aoi("lima_callao"))
    assert gbox.crs.epsg == 32718
    assert gbox.resolution.x == 10 and gbox.resolution.y == -10
    assert gbox.affine.c % 10 == 0 and gbox.affine.f % 10 == 0
    # the bounding box of Lima+Callao is about 62 x 104 km
    assert 55_000 < gbox.shape.x * 10 < 70_000 and 95_000 < gbox.shape.y * 10 < 112_000


def test_tiles_cover_the_grid_exactly_once() -> None:
    gbox = run_geobox(from_geometry("t", box(-77.05, -12.10, -77.00, -12.05), "t"))
    parts = tiles(gbox, 256)
    seen = np.zeros((gbox.shape.y, gbox.shape.x), np.int32)
    for t in parts:
        seen[t.row0 : t.row0 + t.height, t.col0 : t.col0 + t.width] += 1
    assert (seen == 1).all()
    assert len({t.name for t in parts}) == len(parts)


def test_padded_tile_is_clamped_and_inner_crop_matches() -> None:
    gbox = run_geobox(from_geometry("t", box(-77.05, -12.10, -77.00, -12.05), "t"))
    first, last = tiles(gbox, 256)[0], tiles(gbox, 256)[-1]
    padded, origin, inner = first.padded(gbox, 16)
    assert origin == (0, 0) and inner == (slice(0, 256), slice(0, 256))
    assert padded.shape.y == 256 + 16
    padded, origin, inner = last.padded(gbox, 16)
    assert origin == (last.row0 - 16, last.col0 - 16)
    assert (
        padded[inner[0], inner[1]].affine
        == gbox[last.row0 : last.row0 + last.height, last.col0 : last.col0 + last.width].affine
    )


def test_clip_to_imagery_keeps_pixel_alignment() -> None:
    gbox = run_geobox(load_aoi("lima"))
    clipped = clip_geobox(gbox, box(-77.05, -12.10, -77.00, -12.05))
    assert (clipped.affine.c - gbox.affine.c) % 10 == 0
    assert clipped.shape.x < 700 and clipped.shape.y < 700


def test_tile_anchor_uses_the_coarsest_block_grid_the_tile_size_fits() -> None:
    ten_m, twenty_m, odd = (512, 512, 0, 0), (1024, 1024, 40, 100), (700, 700, 3, 3)
    assert tile_anchor([ten_m, twenty_m, odd], 1024, 17) == (23, 83)
    assert tile_anchor([ten_m, twenty_m], 512, 17) == (495, 495)
    assert tile_anchor([odd], 1024, 17) == (0, 0)
    gbox = GeoBox((2500, 1100), Affine(10, 0, 0, 0, -10, 0), "EPSG:32718")
    layout = tiles(gbox, 1024, (23, 83))
    assert sorted({t.row0 for t in layout}) == [0, 23, 1047, 2071]
    assert sorted({t.col0 for t in layout}) == [0, 83]
    assert sum(t.height * t.width for t in layout) == 2500 * 1100
