from __future__ import annotations

import numpy as np
from shapely.geometry import box

from imagery.aoi import from_geometry, load_aoi
from imagery.grid import clip_geobox, read_order, run_geobox, tiles


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


def test_read_order_walks_strips_of_two_tile_rows_column_by_column() -> None:
    from affine import Affine
    from odc.geo.geobox import GeoBox

    gbox = GeoBox((500, 300), Affine(10, 0, 0, 0, -10, 0), "EPSG:32718")
    grid = tiles(gbox, 100)  # 5 rows x 3 columns
    order = [(t.row, t.col) for t in read_order(grid)]
    assert sorted(order) == sorted((t.row, t.col) for t in grid)
    assert order[:6] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    assert order[6:12] == [(2, 2), (3, 2), (2, 1), (3, 1), (2, 0), (3, 0)]
    assert order[12:] == [(4, 0), (4, 1), (4, 2)]
