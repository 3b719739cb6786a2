"""Band statistics summed over a raster's parts equal those GDAL computes reading the whole raster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from imagery.band_statistics import BandStatistics
from imagery.export import SCORE_MAX_ERROR, write_cog
from tests.gdal_statistics import gdal_statistics_tags


def _raster(path: Path, values: np.ndarray) -> Path:
    with rasterio.open(
        path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0], count=1,
        dtype="float32", nodata=float("nan"), crs="EPSG:32718",
        transform=rasterio.Affine(10, 0, 0, 0, -10, 0),
    ) as ds:  # fmt: skip
        ds.write(values, 1)
    return path


def test_statistics_summed_over_parts_equal_gdals(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    values = rng.normal(0.4, 0.2, (900, 700)).astype(np.float32)
    values[rng.random(values.shape) < 0.2] = np.nan
    values[:100] = np.nan  # a part with no valid pixel
    summed = BandStatistics()
    for rows in np.array_split(values, 9):
        for part in np.array_split(rows, 4, axis=1):
            summed.merge(BandStatistics.of(part))
    ours, gdal = summed.gdal_tags(), gdal_statistics_tags(_raster(tmp_path / "v.tif", values))
    assert ours.keys() == gdal.keys()
    for key in ("STATISTICS_MINIMUM", "STATISTICS_MAXIMUM", "STATISTICS_VALID_PERCENT"):
        assert ours[key] == gdal[key]
    for key in ("STATISTICS_MEAN", "STATISTICS_STDDEV"):
        assert float(ours[key]) == pytest.approx(float(gdal[key]), rel=1e-12)


def test_no_valid_pixel_gives_no_statistics() -> None:
    empty = BandStatistics.of(np.full((3, 4), np.nan, np.float32))
    assert (empty.count, empty.pixels, empty.gdal_tags()) == (0, 12, {})


def test_a_cog_takes_the_statistics_it_is_given(tmp_path: Path) -> None:
    values = np.random.default_rng(2).random((600, 500)).astype(np.float32)
    scratch = _raster(tmp_path / "s.tif", values)
    given = BandStatistics.of(values).gdal_tags()
    given["STATISTICS_MEAN"] = "0.123"  # not the raster's: it must come from here, not from a read
    cog = write_cog(scratch, tmp_path / "c.tif", categorical=False, predictor="FLOATING_POINT",
                    max_error=SCORE_MAX_ERROR, description="score", statistics=given)  # fmt: skip
    with rasterio.open(cog) as ds:
        assert {k: v for k, v in ds.tags(1).items() if k.startswith("STATISTICS_")} == given
    with pytest.raises(ValueError, match="only with a description"):
        write_cog(
            scratch, tmp_path / "d.tif", categorical=False, predictor="FLOATING_POINT", statistics=given
        )
