from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from shapely.geometry import Point, box
from typer.testing import CliRunner

from imagery.cli import app
from tests.scenes import textured_reflectance, write_scene

runner = CliRunner()


def test_detect_on_real_oscd_city_writes_aligned_layers(oscd: Path, tmp_path: Path) -> None:
    city = oscd / "paris"
    out = tmp_path / "paris"
    result = runner.invoke(app, ["detect", str(city / "before"), str(city / "after"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("change_score.tif", "change_class.tif", "hotspots.geojson", "run.json"):
        assert (out / name).exists()
    with rasterio.open(out / "change_class.tif") as cls, rasterio.open(city / "truth.tif") as truth:
        assert cls.crs == truth.crs and cls.shape == truth.shape
        assert cls.transform.almost_equals(truth.transform)
        assert cls.colormap(1)[1][:3] == (228, 26, 28)
        assert cls.overviews(1) or max(cls.shape) <= 512
    with rasterio.open(out / "change_score.tif") as score:
        values = score.read(1)
        assert score.dtypes[0] == "float32"
        assert np.nanmin(values) >= 0 and np.nanmax(values) <= 1
    meta = json.loads((out / "run.json").read_text())
    assert meta["cloud_mask_applied"] is False and "no cloud mask" in meta["notes"][0]
    hotspots = json.loads((out / "hotspots.geojson").read_text())
    assert "crs" not in hotspots
    if hotspots["features"]:
        lon, lat = hotspots["features"][0]["geometry"]["coordinates"][0][0]
        assert 2.0 < lon < 2.6 and 48.6 < lat < 49.1
    scored = runner.invoke(
        app, ["evaluate", str(out / "change_class.tif"), str(city / "truth.tif"), "--json"]
    )
    assert scored.exit_code == 0, scored.output
    scores = json.loads(scored.output)
    (only,) = scores.values()
    assert only["tp"] + only["fn"] == int((rasterio.open(city / "truth.tif").read(1) > 0).sum())
    assert only["f1"] > 0.03  # the CVA+Otsu baseline scores 0.046 on Paris


def _scene(tmp_path: Path, name: str, **kwargs: object) -> Path:
    return write_scene(tmp_path / name, textured_reflectance((64, 64)), **kwargs)  # type: ignore[arg-type]


def _fails(args: list[str], expected: str, out: Path) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert expected in text, text
    assert "Traceback" not in result.output
    assert not out.exists()


def test_bad_inputs_get_one_line_and_write_nothing(tmp_path: Path) -> None:
    good = _scene(tmp_path, "good")
    out = tmp_path / "out"
    partial = _scene(tmp_path, "partial", skip=("B12",))
    _fails(["detect", str(good), str(partial), "--out", str(out)], "missing band(s) B12", out)
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(["detect", str(good), str(empty), "--out", str(out)], "no band files found", out)
    broken = _scene(tmp_path, "broken")
    victim = next(broken.glob("*_B03.tif"))
    victim.write_bytes(b"II*\x00garbage")
    _fails(["detect", str(good), str(broken), "--out", str(out)], "not a readable GeoTIFF", out)
    point = tmp_path / "point.geojson"
    gpd.GeoDataFrame(geometry=[Point(-77.0, -12.0)], crs=4326).to_file(point)
    _fails(
        ["detect", str(good), str(good), "--out", str(out), "--aoi", str(point)], "expected a Polygon", out
    )
    far = tmp_path / "far.geojson"
    gpd.GeoDataFrame(geometry=[box(-70.2, -12.2, -70.0, -12.0)], crs=4326).to_file(far)
    _fails(
        ["detect", str(good), str(good), "--out", str(out), "--aoi", str(far)], "lies outside the scenes", out
    )
    elsewhere = _scene(tmp_path, "elsewhere", origin=(400_000.0, 8_600_000.0))
    _fails(["detect", str(good), str(elsewhere), "--out", str(out)], "do not overlap", out)
    shutil.rmtree(broken)


def test_evaluate_needs_inputs() -> None:
    result = runner.invoke(app, ["evaluate"])
    assert result.exit_code == 2 and "PREDICTED TRUTH" in result.output


def test_coregister_recovers_a_known_shift(tmp_path: Path) -> None:
    from scipy import ndimage

    refl = textured_reflectance((256, 256), seed=3)
    shifted = np.stack(
        [
            np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(b), (-0.6, 1.3))).real.astype(np.float32)
            for b in refl
        ]
    )
    ref = write_scene(tmp_path / "ref", refl)
    tgt = write_scene(tmp_path / "tgt", shifted)
    out = tmp_path / "co"
    result = runner.invoke(app, ["coregister", str(ref), str(tgt), "--out", str(out)])
    assert result.exit_code == 0, result.output
    shift = json.loads((out / "shift.json").read_text())
    assert abs(shift["dx_px"] - 1.3) < 0.05 and abs(shift["dy_px"] + 0.6) < 0.05
    assert shift["n_tie_points"] >= 1 and "rmse_px" in shift
    assert abs(shift["dx_m"] - 13.0) < 0.5 and abs(shift["dy_m"] - 6.0) < 0.5  # metres: +y north
    assert len(list(out.glob("*_B08.tif"))) == 1


def test_coregister_without_nir_says_which_band_is_missing(tmp_path: Path) -> None:
    refl = textured_reflectance((64, 64), seed=4)
    ref = write_scene(tmp_path / "ref", refl)
    tgt = write_scene(tmp_path / "tgt", refl, skip=("B08",))
    result = runner.invoke(app, ["coregister", str(ref), str(tgt), "--out", str(tmp_path / "co")])
    assert result.exit_code == 2
    assert "missing band(s) B08" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "co").exists()
