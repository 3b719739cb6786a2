"""The aligned-grid fast path of read_band gives what GDAL's warp gives, pixel for pixel."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from imagery.sources.open_rasters import OpenRasters
from imagery.sources.raster import (
    DECODED_BLOCKS,
    OPEN_RASTERS,
    UnfitValues,
    alignment,
    drop_read_caches,
    read_band,
)
from tests.scenes import UTM_ORIGIN, write_band

GRID = Affine(10.0, 0, UTM_ORIGIN[0], 0, -10.0, UTM_ORIGIN[1])


def _warped(path: Path, gbox: GeoBox, resampling: Resampling) -> np.ndarray:
    """GDAL's answer: the general path's WarpedVRT."""
    with rasterio.open(path) as src, WarpedVRT(
        src, crs=str(gbox.crs), transform=gbox.affine, width=gbox.shape.x, height=gbox.shape.y,
        resampling=resampling, src_nodata=src.nodata if src.nodata is not None else 0, nodata=0,
    ) as vrt:  # fmt: skip
        return vrt.read(1)


def _files(tmp_path: Path, block_px: int | None = None) -> dict[str, Path]:
    """A 10 m band, a 20 m band with no-data holes and a 20 m class band, on one 10 m grid (tiled
    in `block_px` blocks when given, which reads them through DECODED_BLOCKS)."""
    rng = np.random.default_rng(3)
    b02 = rng.integers(1, 12000, (300, 260)).astype(np.uint16)
    b11 = rng.integers(1, 12000, (150, 130)).astype(np.uint16)
    b11[40:47, 20:31] = 0
    b11[100, 100] = 0
    scl = rng.integers(0, 12, (150, 130)).astype(np.uint8)
    return {
        "B02": write_band(tmp_path / "T_B02.tif", b02, GRID, tags=None, block_px=block_px),
        "B11": write_band(tmp_path / "T_B11_20m.tif", b11, GRID * Affine.scale(2), block_px=block_px),
        "SCL": write_band(tmp_path / "T_SCL_20m.tif", scl, GRID * Affine.scale(2), block_px=block_px),
    }


#: Windows of the 10 m grid (row0, col0, height, width): inside, at odd offsets, over every edge.
WINDOWS = [(0, 0, 300, 260), (37, 51, 101, 77), (1, 3, 64, 64), (-5, -9, 40, 50), (280, 240, 40, 40),
           (-20, 250, 330, 30), (120, -40, 33, 333), (299, 259, 8, 8)]  # fmt: skip


@pytest.mark.parametrize(
    ("band", "categorical", "resampling"),
    [
        ("B02", False, Resampling.bilinear),
        ("B11", False, Resampling.bilinear),
        ("SCL", True, Resampling.nearest),
    ],
)
def test_aligned_read_equals_gdal_warp(
    tmp_path: Path, band: str, categorical: bool, resampling: Resampling
) -> None:
    path = _files(tmp_path)[band]
    for row0, col0, height, width in WINDOWS:
        gbox = GeoBox((height, width), GRID * Affine.translation(col0, row0), "EPSG:32718")
        with rasterio.open(path) as src:
            assert alignment(src, gbox) is not None
        fast = read_band(str(path), gbox, categorical=categorical)
        assert fast.dtype == (np.uint8 if band == "SCL" else np.uint16)
        np.testing.assert_array_equal(fast, _warped(path, gbox, resampling), err_msg=f"{band} {row0, col0}")


@pytest.mark.parametrize("block_px", [None, 64])
def test_reads_into_a_callers_array_equal_gdal_warp(tmp_path: Path, block_px: int | None) -> None:
    files = _files(tmp_path, block_px)
    resamplings = {"B02": Resampling.bilinear, "B11": Resampling.bilinear, "SCL": Resampling.nearest}
    for band, path in files.items():
        for row0, col0, height, width in [*WINDOWS, (5.5, 5, 40, 40)]:  # the last off the lattice: warped
            gbox = GeoBox((height, width), GRID * Affine.translation(col0, row0), "EPSG:32718")
            want = _warped(path, gbox, resamplings[band])
            out = np.full((height, width), 77, want.dtype)  # stale values: every pixel must be written
            got = read_band(str(path), gbox, categorical=band == "SCL", out=out)
            assert got is out
            np.testing.assert_array_equal(out, want, err_msg=f"{band} {row0, col0}")
            wider = np.full((height, width), 77, np.int32)  # converted: every value fits
            np.testing.assert_array_equal(
                read_band(str(path), gbox, categorical=band == "SCL", out=wider), want
            )
    drop_read_caches()


def test_values_the_callers_array_cannot_hold_fail_on_reading(tmp_path: Path) -> None:
    gbox = GeoBox((20, 20), GRID, "EPSG:32718")
    whole = write_band(tmp_path / "whole_B02.tif", np.full((20, 20), 1234.0, np.float32), GRID)
    out = np.zeros((20, 20), np.uint16)
    assert (read_band(str(whole), gbox, out=out) == 1234).all()  # integers in float: exact
    fraction = write_band(tmp_path / "fraction_B02.tif", np.full((20, 20), 0.25, np.float32), GRID)
    with pytest.raises(UnfitValues, match=r"fraction_B02\.tif: float32 values that uint16 cannot hold"):
        read_band(str(fraction), gbox, out=out)
    negative = write_band(tmp_path / "negative_B02.tif", np.full((20, 20), -3, np.int16), GRID)
    with pytest.raises(UnfitValues, match=r"negative_B02\.tif"):
        read_band(str(negative), gbox, out=out)
    drop_read_caches()


def test_grids_that_do_not_align_take_the_warp(tmp_path: Path) -> None:
    path = _files(tmp_path)["B11"]
    half_pixel = GeoBox((50, 50), GRID * Affine.translation(10.5, 3), "EPSG:32718")
    coarser = GeoBox((50, 50), GRID * Affine.scale(4), "EPSG:32718")  # 20 m -> 40 m averages
    other_crs = GeoBox((50, 50), Affine(10.0, 0, 500_000, 0, -10.0, 8_670_000), "EPSG:32717")
    with rasterio.open(path) as src:
        assert alignment(src, half_pixel) is None
        assert alignment(src, coarser) is None
        assert alignment(src, other_crs) is None
    np.testing.assert_array_equal(
        read_band(str(path), half_pixel), _warped(path, half_pixel, Resampling.bilinear)
    )
    np.testing.assert_array_equal(read_band(str(path), coarser), _warped(path, coarser, Resampling.average))


def test_open_rasters_reuse_a_file_until_it_changes_on_disk(tmp_path: Path) -> None:
    gbox = GeoBox((20, 20), GRID, "EPSG:32718")
    path = write_band(tmp_path / "T_B02.tif", np.full((20, 20), 7, np.uint16), GRID)
    assert (read_band(str(path), gbox) == 7).all()
    files = OpenRasters(size=2)
    with files.reading(str(path)) as (first, _):
        pass
    with files.reading(str(path)) as (again, _):
        assert again is first and not first.closed
    write_band(path, np.full((20, 20), 9, np.uint16), GRID)  # rewritten in place: a new file
    os.utime(path, ns=(1, 1))
    assert (read_band(str(path), gbox) == 9).all()
    with files.reading(str(path)) as (fresh, _):
        assert fresh is not first
    others = [write_band(tmp_path / f"T{i}_B03.tif", np.ones((4, 4), np.uint16), GRID) for i in range(2)]
    for other in others:
        with files.reading(str(other)):
            pass
    assert fresh.closed  # least recently used beyond `size`
    files.close()


def test_dropping_the_read_caches_forgets_blocks_and_closes_files(tmp_path: Path) -> None:
    path = write_band(tmp_path / "T_B02.tif", np.full((300, 260), 7, np.uint16), GRID, block_px=64)
    gbox = GeoBox((100, 100), GRID * Affine.translation(50, 50), "EPSG:32718")
    assert (read_band(str(path), gbox) == 7).all()
    assert DECODED_BLOCKS.held_bytes > 0 and len(OPEN_RASTERS) > 0
    with OPEN_RASTERS.reading(str(path)) as (dataset, _):
        pass
    drop_read_caches()
    assert DECODED_BLOCKS.held_bytes == 0 and len(OPEN_RASTERS) == 0 and dataset.closed
    assert (read_band(str(path), gbox) == 7).all()  # read afresh
