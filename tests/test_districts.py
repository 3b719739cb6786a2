from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import Point, box
from typer.testing import CliRunner

from imagery.cli import app
from imagery.config import LayerParams
from imagery.districts import configured_districts, load_districts
from imagery.errors import InputError
from tests.scenes import textured_reflectance, write_scene


def _layer(path: Path, geoms: list[object], **columns: list[object]) -> Path:
    gpd.GeoDataFrame(columns, geometry=geoms, crs=4326).to_file(path)
    return path


def test_any_district_layer_is_read_into_name_and_code(tmp_path: Path) -> None:
    squares = [box(-77.1, -12.1, -77.0, -12.0), box(-77.0, -12.1, -76.9, -12.0), None]
    inei = _layer(tmp_path / "inei.gpkg", squares, DISTRITO=["A", "B", "C"], UBIGEO=["150101", "150102", "x"])
    frame = load_districts(inei)
    assert list(frame.columns) == ["district", "ubigeo", "geometry"]
    assert frame["district"].tolist() == ["A", "B"] and frame["ubigeo"].tolist() == ["150101", "150102"]
    assert frame.attrs["skipped_without_geometry"] == ["C"]
    named = _layer(tmp_path / "named.geojson", squares[:2], barrio=["X", "Y"])
    assert load_districts(named, name_field="barrio")["ubigeo"].isna().all()


@pytest.mark.parametrize(
    ("geoms", "columns", "kwargs", "message"),
    [
        ([box(0, 0, 1, 1)], {"foo": ["a"]}, {}, "no district name attribute (expected one of NOMBDIST"),
        (
            [box(0, 0, 1, 1)],
            {"NOMBDIST": ["a"]},
            {"code_field": "CODE"},
            "no attribute 'CODE' (has NOMBDIST)",
        ),
        ([Point(0, 0)], {"NOMBDIST": ["a"]}, {}, "expected polygons, found Point"),
        ([None], {"NOMBDIST": ["a"]}, {}, "the layer has no geometries"),
    ],
)
def test_bad_district_layers_are_named_in_one_line(
    tmp_path: Path,
    geoms: list[object],
    columns: dict[str, list[object]],
    kwargs: dict[str, str],
    message: str,
) -> None:
    path = _layer(tmp_path / "d.geojson", geoms, **columns)
    with pytest.raises(InputError, match=r"^districts .*d.geojson: ") as err:
        load_districts(path, **kwargs)
    assert message in str(err.value)


def test_settings_name_the_default_district_file(tmp_path: Path) -> None:
    assert configured_districts(LayerParams()) is None  # none configured: hotspots get no district
    layer = _layer(tmp_path / "d.geojson", [box(0, 0, 1, 1)], NOMBDIST=["a"], IDDIST=["1"])
    assert configured_districts(LayerParams(districts_file=layer))["district"].tolist() == ["a"]
    with pytest.raises(InputError, match=r"^--districts .*nothing.gpkg: no such file"):
        configured_districts(LayerParams(districts_file=layer), tmp_path / "nothing.gpkg")
    with pytest.raises(InputError, match=r"^layers.districts_file .*gone.gpkg: no such file"):
        configured_districts(LayerParams(districts_file=tmp_path / "gone.gpkg"))


def test_detect_refuses_a_bad_districts_file_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = write_scene(tmp_path / "s", textured_reflectance((64, 64)))
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(
        app, ["detect", str(scene), str(scene), "--out", str(out), "--districts", "nope.shp"]
    )
    assert result.exit_code == 2 and "--districts nope.shp: no such file" in result.output
    monkeypatch.setenv("VIGIA_LAYERS__DISTRICTS_FILE", str(tmp_path / "missing.geojson"))
    result = runner.invoke(app, ["detect", str(scene), str(scene), "--out", str(out)])
    assert (
        result.exit_code == 2 and "layers.districts_file" in result.output and "no such file" in result.output
    )
    assert not out.exists()


def test_demo_refuses_a_bad_districts_file_before_running(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--data", str(tmp_path / "d"), "--districts", "nope.gpkg"])
    assert result.exit_code == 2 and "--districts nope.gpkg: no such file" in result.output
    assert not (tmp_path / "d").exists()


def test_nightly_flow_checks_the_district_file_while_planning(tmp_path: Path) -> None:
    from flows.params import NightlyParams
    from flows.tasks import plan_task

    scenes = tmp_path / "scenes"
    write_scene(scenes / "a", textured_reflectance((64, 64)))
    params = NightlyParams(
        local_root=str(scenes), run_date="2024-01-20", districts=str(tmp_path / "nope.gpkg")
    )
    with pytest.raises(InputError, match=r"^parameter districts .*nope.gpkg: no such file"):
        plan_task.fn(params)
