"""COG encoding of the published rasters (imagery.export.finish_cog) and the class-group mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox

from imagery.export import SCORE_MAX_ERROR, finish_cog, in_classes, scratch_raster


def _scratch(path: Path, data: np.ndarray) -> Path:
    gbox = GeoBox(data.shape, Affine(10, 0, 262000, 0, -10, 8724000), "EPSG:32718")
    with scratch_raster(path, gbox, "float32", float("nan")) as ds:
        ds.write(data, 1)
    return path


def test_score_is_stored_within_its_error_bound_and_smaller_than_lossless(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    evidence = rng.gamma(1.5, 1.0, (1024, 1024)).astype(np.float32)
    score = (1 / (1 + np.exp(-(evidence - 3.5)))).astype(np.float32)  # the detector's score shape
    score[:100, :300] = np.nan
    scratch = _scratch(tmp_path / "score_scratch.tif", score)
    lossy = finish_cog(scratch, tmp_path / "lerc.tif", description="s", categorical=False,
                       predictor="FLOATING_POINT", max_error=SCORE_MAX_ERROR)  # fmt: skip
    exact = finish_cog(scratch, tmp_path / "exact.tif", description="s", categorical=False,
                       predictor="FLOATING_POINT")  # fmt: skip
    with rasterio.open(lossy) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "LERC_DEFLATE"
        stored = ds.read(1)
    with rasterio.open(exact) as ds:
        np.testing.assert_array_equal(ds.read(1), score)  # lossless without a max_error
    assert np.array_equal(np.isnan(stored), np.isnan(score))
    ok = np.isfinite(score)
    err = np.abs(stored[ok] - score[ok])
    assert err.max() <= SCORE_MAX_ERROR * (1 + 1e-5)
    assert err.max() > SCORE_MAX_ERROR / 10  # it is quantised, not stored exactly
    assert lossy.stat().st_size < exact.stat().st_size / 2


def test_class_membership_equals_isin_for_every_value() -> None:
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for group in ((1, 2, 3), (4, 5, 6), (3,), (1, 3), (0, 255), (254, 255)):
        np.testing.assert_array_equal(in_classes(values, group), np.isin(values, group), err_msg=str(group))
    wide = values.astype(np.int32) - 3  # other dtypes (negative values too) take the general path
    np.testing.assert_array_equal(in_classes(wide, (1, 2, 3)), np.isin(wide, (1, 2, 3)))
