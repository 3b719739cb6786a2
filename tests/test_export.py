"""COG encoding of the published rasters (imagery.export.finish_cog) and the class-group mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.shutil import copy as rio_copy

from imagery.export import (
    COG_BLOCKSIZE,
    COG_OPTIONS,
    COG_TMP_ENV,
    SCORE_MAX_ERROR,
    finish_cog,
    in_classes,
    scratch_raster,
    write_cog,
)
from imagery.overviews import level_shapes
from tests.gdal_statistics import gdal_statistics_tags


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


@pytest.mark.parametrize(
    ("shape", "max_error"), [((1301, 777), 0.0), ((2100, 1030), SCORE_MAX_ERROR), ((1024, 1536), 0.0)]
)
def test_score_cog_with_overviews_averaged_here_equals_gdals_own(
    tmp_path: Path, shape: tuple[int, int], max_error: float
) -> None:
    """The score COG, whose average overviews are computed by imagery/overviews.py, is byte for byte
    the COG GDAL's driver makes averaging them itself: odd sizes (pixel fractions weighted), NaN
    holes, a level with no valid pixel in a window, signed zeros and tiny values."""
    rng = np.random.default_rng(sum(shape))
    score = (1 / (1 + np.exp(-(rng.gamma(1.5, 1.0, shape) - 3.5)))).astype(np.float32)
    score[:130, :300] = np.nan
    score[rng.random(shape) < 0.05] = np.nan
    score[500:520, 600:640] = -0.0
    score[700:710, :50] = np.float32(1e-30)
    scratch = _scratch(tmp_path / "score_scratch.tif", score)
    ours = finish_cog(scratch, tmp_path / "ours.tif", description="s", categorical=False,
                      predictor="FLOATING_POINT", max_error=max_error)  # fmt: skip
    options: dict[str, object] = dict(COG_OPTIONS, RESAMPLING="AVERAGE", OVERVIEWS="IGNORE_EXISTING")
    options |= (
        {"COMPRESS": "LERC_DEFLATE", "MAX_Z_ERROR": max_error}
        if max_error
        else {"PREDICTOR": "FLOATING_POINT"}
    )
    with rasterio.Env(**COG_TMP_ENV):
        rio_copy(scratch, tmp_path / "gdal.tif", driver="COG", **options)
    with rasterio.open(ours) as ds:
        assert len(ds.overviews(1)) == len(level_shapes(*shape, COG_BLOCKSIZE)) > 0
    assert ours.read_bytes() == (tmp_path / "gdal.tif").read_bytes()
    assert not list(tmp_path.glob(".ours*"))  # the overview levels and their VRT are gone


def test_score_described_in_its_cog_equals_the_cog_of_the_described_scratch(tmp_path: Path) -> None:
    """`write_cog(description=...)` stores the description and statistics in the COG without writing
    to the scratch (publish reads it meanwhile): the same bytes as describing the scratch first."""
    rng = np.random.default_rng(11)
    score = rng.random((1100, 900)).astype(np.float32)
    score[rng.random(score.shape) < 0.1] = np.nan
    untouched = _scratch(tmp_path / "untouched.tif", score)
    before = untouched.read_bytes()
    ours = write_cog(untouched, tmp_path / "ours.tif", categorical=False, predictor="FLOATING_POINT",
                     max_error=SCORE_MAX_ERROR, description="change score",
                     statistics=gdal_statistics_tags(untouched))  # fmt: skip
    assert untouched.read_bytes() == before
    assert not list(tmp_path.glob("*.aux.xml"))
    described = finish_cog(_scratch(tmp_path / "described.tif", score), tmp_path / "described_cog.tif",
                           description="change score", categorical=False, predictor="FLOATING_POINT",
                           max_error=SCORE_MAX_ERROR)  # fmt: skip
    with rasterio.open(ours) as ds:
        assert ds.descriptions == ("change score",)
        assert float(ds.tags(1)["STATISTICS_MAXIMUM"]) == float(np.nanmax(score))
        assert float(ds.tags(1)["STATISTICS_VALID_PERCENT"]) == pytest.approx(
            100 * np.isfinite(score).mean(), abs=0.01
        )
    assert ours.read_bytes() == described.read_bytes()
    with pytest.raises(ValueError, match="only for a float raster"):
        write_cog(untouched, tmp_path / "class.tif", categorical=True, predictor="YES", description="x")
    with pytest.raises(ValueError, match="only with its statistics"):
        write_cog(
            untouched, tmp_path / "bare.tif", categorical=False, predictor="FLOATING_POINT", description="x"
        )
