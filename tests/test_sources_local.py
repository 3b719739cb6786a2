from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from imagery.aoi import from_geometry
from imagery.errors import InputError
from imagery.grid import run_geobox
from imagery.sentinel2 import CHANGE_BANDS, band_from_filename, boa_offset, date_from_name
from imagery.sources.local import LocalSource, open_scene, read_scene_bands
from tests.scenes import UTM_ORIGIN, textured_reflectance, write_band, write_scene


@pytest.mark.parametrize(
    "name,band",
    [("T18LTM_20240110T152639_B02.tif", "B02"), ("x_B8A_20m.jp2", "B8A"),
     ("T18LTM_20240110T152639_SCL_20m.jp2", "SCL"), ("x_B12.tiff", "B12"), ("x_B13.tif", None),
     ("readme.txt", None)],
)  # fmt: skip
def test_band_names(name: str, band: str | None) -> None:
    assert band_from_filename(name) == band


def test_dates_and_offsets() -> None:
    assert date_from_name("S2A_OPER_MSI_L1C_TL_MTI__20160120T104345_A003020") == date(2016, 1, 20)
    assert date_from_name("no date here") is None
    assert boa_offset("04.00", "L2A") == -1000 and boa_offset("05.10", "L2A") == -1000
    assert boa_offset("02.14", "L2A") == 0 and boa_offset("04.00", "L1C") == 0


def test_folder_scene_reads_onto_grid_with_offset_removed(tmp_path: Path) -> None:
    refl = textured_reflectance((64, 64))
    scl = np.full((32, 32), 4, np.uint8)
    scl[:8, :8] = 9
    folder = write_scene(tmp_path / "S2B_MSIL2A_20240110_N0510", refl, scl=scl, offset=-1000.0)
    scene = open_scene(folder)
    assert scene.acquired == date(2024, 1, 10) and scene.level == "L2A" and scene.has_scl
    assert scene.boa_offset == -1000.0
    gbox = run_geobox(from_geometry("t", scene.footprint, "t"))
    gbox = gbox[0:40, 0:40]
    data = read_scene_bands(scene, [*CHANGE_BANDS, "SCL"], gbox)
    assert data["B02"].dtype == np.float32 and data["SCL"].dtype == np.uint8
    # the grid is snapped to the same 10 m lattice, so B02 comes back unchanged, offset removed
    inv = ~Affine(10, 0, UTM_ORIGIN[0], 0, -10, UTM_ORIGIN[1])
    col, row = (int(round(v)) for v in inv * (gbox.affine.c, gbox.affine.f))
    np.testing.assert_allclose(data["B02"], refl[0, row : row + 40, col : col + 40], atol=6e-5)
    assert np.nanmean(data["B11"]) == pytest.approx(float(refl[4].mean()), rel=0.05)
    assert (data["SCL"] == 9).sum() > 0


def test_read_into_a_callers_stack_gives_the_same_bands(tmp_path: Path) -> None:
    refl = textured_reflectance((64, 64))
    folder = write_scene(tmp_path / "S2B_MSIL2A_20240110_N0510", refl, offset=-1000.0)
    scene = open_scene(folder)
    gbox = run_geobox(from_geometry("t", scene.footprint, "t"))[3:50, 2:60]
    bands = ["B04", "B11", "B03"]
    stack = np.full((len(bands), gbox.shape.y, gbox.shape.x), -7.0, np.float32)
    into = LocalSource(tmp_path).read(scene, bands, gbox, out=stack)
    fresh = read_scene_bands(scene, bands, gbox)
    for i, band in enumerate(bands):
        np.testing.assert_array_equal(stack[i], fresh[band])
        assert np.shares_memory(into[band], stack[i])
    assert not (stack == -7.0).any()  # every plane written


def test_geographic_scene_is_warped_onto_utm_grid(oscd: Path) -> None:
    scene = open_scene(oscd / "paris" / "before")
    assert scene.level == "L1C" and not scene.has_scl
    aoi = from_geometry("paris", scene.footprint.buffer(-0.01), "paris")
    gbox = run_geobox(aoi)
    assert gbox.crs.epsg == 32631
    data = read_scene_bands(scene, ["B04", "B11"], gbox)
    assert np.isfinite(data["B04"]).mean() > 0.99
    assert 0.01 < float(np.nanmedian(data["B04"])) < 0.3
    assert np.isfinite(data["B11"]).mean() > 0.99


def test_multiband_geotiff_scene(tmp_path: Path) -> None:
    refl = textured_reflectance((32, 32))
    path = tmp_path / "T18LTM_20240110T152639_stack.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=32,
        height=32,
        count=6,
        dtype="uint16",
        crs="EPSG:32718",
        transform=Affine(10, 0, *UTM_ORIGIN[:1], 0, -10, UTM_ORIGIN[1]),
    ) as ds:
        ds.write(np.round(refl * 10000).astype(np.uint16))
        for i, name in enumerate(["B2", "B03", "b4", "B08", "B11", "B12"], 1):
            ds.set_band_description(i, name)
    scene = open_scene(path)
    assert sorted(scene.assets) == sorted(CHANGE_BANDS)
    assert scene.band_index["B11"] == 5


def test_local_source_search_filters_by_date_and_aoi(tmp_path: Path) -> None:
    refl = textured_reflectance((32, 32))
    write_scene(tmp_path / "S2A_MSIL2A_20240101T152639_X", refl, date="20240101")
    write_scene(tmp_path / "S2A_MSIL2A_20240201T152639_X", refl, date="20240201")
    source = LocalSource(tmp_path)
    aoi = from_geometry("t", open_scene(tmp_path / "S2A_MSIL2A_20240101T152639_X").footprint, "t")
    found = source.search(aoi, date(2024, 1, 15), date(2024, 2, 15))
    assert [s.acquired for s in found] == [date(2024, 2, 1)]
    far = from_geometry("far", box(-70.1, -12.1, -70.0, -12.0), "far")
    assert source.search(far, date(2024, 1, 1), date(2024, 3, 1)) == []


def test_bad_scenes_fail_with_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no band files found"):
        open_scene(empty)
    with pytest.raises(InputError, match="no such file"):
        open_scene(tmp_path / "nothere")
    partial = write_scene(tmp_path / "partial", textured_reflectance((16, 16)), skip=("B11",))
    scene = open_scene(partial)
    with pytest.raises(InputError, match="missing band"):
        read_scene_bands(scene, CHANGE_BANDS, run_geobox(from_geometry("t", scene.footprint, "t")))
    broken = write_scene(tmp_path / "broken", textured_reflectance((16, 16)))
    victim = next(broken.glob("*_B04.tif"))
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(InputError, match="not a readable") as err:
        open_scene(broken)
    assert victim.name in str(err.value) and "\n" not in str(err.value)


def test_jp2_band_files_are_read(tmp_path: Path) -> None:
    data = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) % 3000) + 100
    write_band(
        tmp_path / "T18LTM_20240110T152639_B02_10m.jp2",
        data,
        Affine(10, 0, UTM_ORIGIN[0], 0, -10, UTM_ORIGIN[1]),
        driver="JP2OpenJPEG",
    )
    scene = open_scene(tmp_path)
    assert scene.assets["B02"].endswith(".jp2")
