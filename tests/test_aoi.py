from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import LineString, Point, box

from imagery.aoi import builtin_names, load_aoi
from imagery.errors import InputError


def test_builtin_aois_cover_lima_and_callao() -> None:
    assert builtin_names() == ["callao", "lima", "lima_callao"]
    both = load_aoi("lima_callao")
    minx, miny, maxx, maxy = both.geometry.bounds
    assert -77.25 < minx < -77.15 and -76.65 < maxx < -76.60
    assert -12.55 < miny < -12.50 and -11.60 < maxy < -11.55
    assert both.utm_crs().to_epsg() == 32718
    lima, callao = load_aoi("lima"), load_aoi("callao")
    assert lima.geometry.area > 10 * callao.geometry.area
    assert not lima.geometry.contains(callao.geometry.representative_point())
    assert both.geometry.contains(callao.geometry.representative_point())


@pytest.mark.parametrize(
    "driver,suffix", [("GeoJSON", ".geojson"), ("GPKG", ".gpkg"), ("ESRI Shapefile", ".shp")]
)
def test_aoi_from_any_vector_format_in_any_crs(tmp_path: Path, driver: str, suffix: str) -> None:
    area = gpd.GeoDataFrame(geometry=[box(-77.05, -12.10, -77.00, -12.05)], crs=4326).to_crs(32718)
    path = tmp_path / f"zone{suffix}"
    area.to_file(path, driver=driver)
    aoi = load_aoi(path)
    assert aoi.name == "zone"
    assert aoi.geometry.bounds == pytest.approx((-77.05, -12.10, -77.00, -12.05), abs=1e-6)
    assert 25 < aoi.area_km2 < 35


def _write(path: Path, geometry: object, crs: object = 4326) -> Path:
    gpd.GeoDataFrame(geometry=[geometry], crs=crs).to_file(path)
    return path


@pytest.mark.parametrize(
    "geometry,message",
    [
        (Point(-77.0, -12.0), "expected a Polygon"),
        (LineString([(-77.0, -12.0), (-76.9, -12.1)]), "expected a Polygon"),
        (box(-77.0, -12.0, -76.99999, -11.99999), "outside the accepted"),
        (box(-80.0, -15.0, -60.0, 5.0), "outside the accepted"),
    ],
)
def test_bad_aoi_geometries_get_one_clear_line(tmp_path: Path, geometry: object, message: str) -> None:
    path = _write(tmp_path / "bad.gpkg", geometry)
    with pytest.raises(InputError, match=message) as err:
        load_aoi(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_aoi_without_crs_and_missing_files(tmp_path: Path) -> None:
    shp = tmp_path / "nocrs.shp"
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)]).to_file(shp)
    with pytest.raises(InputError, match="no CRS"):
        load_aoi(shp)
    with pytest.raises(InputError, match="not a built-in AOI name"):
        load_aoi("atlantis")
    empty = tmp_path / "empty.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(InputError, match="no features"):
        load_aoi(empty)
