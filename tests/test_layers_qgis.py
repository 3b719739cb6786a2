"""The demo run opened in real QGIS (Debian's python3-qgis under /usr/bin/python3, headless):
every layer and the project are valid, in the right CRS, with the right feature counts and the
shipped styles, and the project renders to a PNG that is not blank."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest

from imagery.export import CHANGE_CLASSES

QGIS_PYTHON = "/usr/bin/python3"
CHECKER = Path(__file__).with_name("qgis_check.py")


def _qgis_available() -> str | None:
    """None when QGIS's Python bindings import, else why not."""
    if not Path(QGIS_PYTHON).exists():
        return f"{QGIS_PYTHON} not found"
    probe = subprocess.run(
        [QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, text=True, timeout=120
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"{QGIS_PYTHON} cannot import qgis ({last}); `make system-deps` installs python3-qgis"
    return None


@pytest.fixture(scope="module")
def qgis_report(demo_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The checker's report on a copy of the demo run in another folder (so relative paths are
    what makes the project open)."""
    reason = _qgis_available()
    if reason:
        pytest.skip(reason)
    where = tmp_path_factory.mktemp("qgis")
    run = where / "moved-run"
    shutil.copytree(demo_run[1], run)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env |= {"QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(where)}
    done = subprocess.run(
        [QGIS_PYTHON, str(CHECKER), str(run), str(where)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), run


@pytest.mark.slow
def test_every_layer_opens_styled_in_qgis(qgis_report: tuple[dict, Path]) -> None:
    report, run = qgis_report
    files = report["files"]
    for key, facts in files.items():
        assert facts["valid"], key
    hot = gpd.read_file(run / "hotspots.geojson")
    grid = gpd.read_file(run / "priority_grid.geojson")
    assert (
        files["hotspots.geojson"]["crs"] == "EPSG:4326"
        and files["vigia.gpkg|hotspots"]["crs"] == "EPSG:32718"
    )
    assert files["hotspots.geojson"]["features"] == files["vigia.gpkg|hotspots"]["features"] == len(hot)
    assert (
        files["priority_grid.geojson"]["features"]
        == files["vigia.gpkg|priority_grid"]["features"]
        == len(grid)
    )
    man_made = [CHANGE_CLASSES[c][0] for c in (1, 2, 3)]
    for key in ("hotspots.geojson", "vigia.gpkg|hotspots"):  # .qml sidecar / GeoPackage default style
        assert files[key]["renderer"] == "categorizedSymbol" and files[key]["attribute"] == "change_type"
        assert files[key]["classes"] == man_made and files[key]["labels_enabled"]
        assert files[key]["colors"][0] == "#e41a1c"
    for key in ("priority_grid.geojson", "vigia.gpkg|priority_grid"):
        assert files[key]["renderer"] == "graduatedSymbol" and files[key]["attribute"] == "priority"
        assert files[key]["classes"][0] == "priority 1-5"
    if _with_districts(run):
        assert files["vigia.gpkg|districts"]["renderer"] == "singleSymbol"
        assert files["vigia.gpkg|districts"]["labels_enabled"]
    else:
        assert "vigia.gpkg|districts" not in files
    classes = files["change_class.tif"]
    assert classes["renderer"] == "paletted" and classes["crs"] == "EPSG:32718"
    assert classes["classes"] == [CHANGE_CLASSES[c][0] for c in range(1, 7)]  # labels come from the .qml
    score = files["change_score.tif"]
    assert score["renderer"] == "singlebandpseudocolor" and "0.5 (threshold)" in score["classes"]


@pytest.mark.slow
def test_project_opens_grouped_from_a_moved_folder_and_renders(qgis_report: tuple[dict, Path]) -> None:
    from matplotlib.image import imread

    report, run = qgis_report
    project = report["project"]
    assert project["read"] and project["crs"] == "EPSG:32718"
    groups = {
        "Patrol": ["Hotspots (man-made change)", "Patrol priority grid"],
        "Reference": ["Districts (hotspot summary)"],
        "Change rasters": ["Change class", "Change score"],
    }
    if not _with_districts(run):
        del groups["Reference"]
    assert project["groups"] == groups
    layers = project["layers"]
    assert len(layers) == 4 + _with_districts(run)
    for layer_id, facts in layers.items():
        assert facts["valid"] and facts["crs"] == "EPSG:32718", layer_id
        assert facts["source"].startswith(str(run)), facts["source"]  # resolved against the moved folder
    assert layers["vigia_hotspots"]["features"] == len(gpd.read_file(run / "hotspots.geojson"))
    assert layers["vigia_hotspots"]["renderer"] == "categorizedSymbol"
    assert layers["vigia_priority_grid"]["renderer"] == "graduatedSymbol"
    assert layers["vigia_change_class"]["renderer"] == "paletted"
    render = project["render"]
    assert render["errors"] == 0
    image = imread(render["png"])
    assert image.shape[:2] == (800, 800)
    assert image[..., :3].reshape(-1, 3).std(axis=0).min() > 0.05  # not blank, not one colour
    assert render["non_white_share"] > 0.02
    for layer_id, share in project["layer_renders"].items():
        assert share > 0.001, f"{layer_id} draws nothing"
    assert np.isfinite(image).all()


def _with_districts(run: Path) -> bool:
    """Whether the run was published with a district layer (the shared Peru data was present)."""
    return "districts" in json.loads((run / "run.json").read_text())
