"""The report and the layer writers on edge cases the demo run does not have: no change at all,
run.json without (or with older forms of) co-registration quality."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
from odc.geo.geobox import GeoBox

from imagery.export import CHANGE_CLASSES
from imagery.hotspots import extract_hotspots
from imagery.layers import write_vector_layers
from imagery.priority_grid import priority_grid
from imagery.report import coregistration_section, map_png, render_report


def test_coregistration_section_shows_what_run_json_has() -> None:
    assert "not recorded" in coregistration_section(None)
    assert "not recorded" in coregistration_section({})
    flat = coregistration_section({"dx_px": 0.4, "dy_px": -0.3, "method": "global", "gradient": [0, 0]})
    assert "dx_px" in flat and "0.400" in flat and "gradient" not in flat
    tiles = [{"tile": "r0c0", "dx_px": 0.1, "correction_px": [0.0, 0.25]}, {"tile": "r0c1", "dx_px": 0.2}]
    per_tile = coregistration_section({"summary": {"n_tie_points": 12}, "tiles": tiles})
    assert "n_tie_points" in per_tile and "Per tile (2)" in per_tile and "+0.000, +0.250" in per_tile


def test_a_run_without_change_still_writes_every_layer_and_the_report(tmp_path: Path) -> None:
    gbox = GeoBox.from_bbox((270_000, 8_660_000, 272_000, 8_662_000), "EPSG:32718", resolution=10)
    classes = np.zeros(gbox.shape, np.uint8)
    with rasterio.open(
        tmp_path / "change_class.tif", "w", driver="GTiff", width=gbox.shape.x, height=gbox.shape.y, count=1,
        dtype="uint8", crs="EPSG:32718", transform=gbox.affine, nodata=255,
    ) as ds:  # fmt: skip
        ds.write(classes, 1)
    spots = extract_hotspots(classes, classes.astype(np.float32), gbox, before_date=None, after_date=None)
    grid = priority_grid(classes, classes.astype(np.float32), gbox, spots)
    b = gbox.boundingbox
    outputs = write_vector_layers(
        tmp_path, run_crs="EPSG:32718", run_extent=(b.left, b.bottom, b.right, b.top), hotspots=spots,
        priority_grid=grid, districts=None, score_threshold=0.5, title="empty",
    )  # fmt: skip
    assert json.loads(outputs["hotspots"].read_text())["features"] == []
    assert dict(pyogrio.list_layers(outputs["gpkg"])) == {
        "hotspots": "MultiPolygon", "priority_grid": "MultiPolygon", "layer_styles": None,
    }  # fmt: skip
    sources = [e.text for e in ET.parse(outputs["project"]).getroot().iter("datasource")]
    assert sources == [
        "./vigia.gpkg|layername=hotspots", "./vigia.gpkg|layername=priority_grid",
        "./change_class.tif", "./change_score.tif",
    ]  # fmt: skip
    page = render_report({"aoi": "x"}, spots, map_png(tmp_path / "change_class.tif", spots, None))
    assert page.count("no hotspots") == 2 and "not recorded" in page
    assert CHANGE_CLASSES[1][0] not in page.split("<h2>Change classes</h2>")[1]  # no class counts in run.json
