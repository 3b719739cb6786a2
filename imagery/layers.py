"""Write a run's vector layers and its QGIS files: GeoJSON (RFC 7946), `vigia.gpkg` in the run CRS
with default styles, `.qml` sidecars (same base name as each layer) and the `vigia.qgs` project."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import geopandas as gpd

from imagery.export import write_geojson, write_gpkg, write_text
from imagery.qgis_project import ProjectLayer, project_document
from imagery.qgis_styles import (
    class_raster_style,
    district_style,
    hotspot_style,
    priority_grid_style,
    qml_document,
    score_raster_style,
)

GPKG_NAME = "vigia.gpkg"
PROJECT_NAME = "vigia.qgs"
#: Layer -> (title in QGIS, group). Order is the drawing order, top first.
LAYER_TITLES: dict[str, tuple[str, str]] = {
    "hotspots": ("Hotspots (man-made change)", "Patrol"),
    "priority_grid": ("Patrol priority grid", "Patrol"),
    "districts": ("Districts (hotspot summary)", "Reference"),
    "change_class": ("Change class", "Change rasters"),
    "change_score": ("Change score", "Change rasters"),
}


def _bounds(
    frame: gpd.GeoDataFrame, fallback: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    if frame.empty:
        return fallback
    x0, y0, x1, y1 = (float(v) for v in frame.total_bounds)
    return x0, y0, x1, y1


def write_vector_layers(
    out_dir: Path,
    *,
    run_crs: str,
    run_extent: tuple[float, float, float, float],
    hotspots: gpd.GeoDataFrame,
    priority_grid: gpd.GeoDataFrame,
    districts: gpd.GeoDataFrame | None,
    score_threshold: float,
    title: str,
) -> dict[str, Path]:
    """All vector layers, styles and the project; the rasters change_score.tif and change_class.tif
    are expected in `out_dir` under those names. Returns output name -> path."""
    vectors = {"hotspots": hotspots, "priority_grid": priority_grid}
    if districts is not None:
        vectors["districts"] = districts
    styles: dict[str, list[ET.Element]] = {
        "hotspots": hotspot_style(),
        "priority_grid": priority_grid_style(),
        "districts": district_style(),
        "change_class": class_raster_style(),
        "change_score": score_raster_style(score_threshold),
    }
    qml = {name: qml_document(style) for name, style in styles.items()}
    in_run_crs = {k: v.to_crs(run_crs) for k, v in vectors.items()}
    # The GeoPackage is written in a thread beside the GeoJSON files: most of its time is spent
    # waiting on SQLite's writes, with the GIL released.
    with ThreadPoolExecutor(1, thread_name_prefix="vigia-gpkg") as thread:
        gpkg = thread.submit(write_gpkg, in_run_crs, out_dir / GPKG_NAME, qml)
        outputs = {
            "hotspots": write_geojson(hotspots, out_dir / "hotspots.geojson"),
            "priority_grid": write_geojson(priority_grid, out_dir / "priority_grid.geojson"),
            "gpkg": gpkg.result(),
        }
    for name in ("hotspots", "priority_grid", "change_class", "change_score"):
        outputs[f"{name}_style"] = write_text(qml[name], out_dir / f"{name}.qml")
    layers = []
    for name, (label, group) in LAYER_TITLES.items():
        if name in vectors:
            frame = in_run_crs[name]
            source, provider, extent = f"./{GPKG_NAME}|layername={name}", "ogr", _bounds(frame, run_extent)
        elif name.startswith("change_"):
            source, provider, extent = f"./{name}.tif", "gdal", run_extent
        else:
            continue
        layers.append(
            ProjectLayer(
                layer_id=f"vigia_{name}", name=label, source=source, provider=provider, crs=run_crs,
                extent=extent, style=styles[name], group=group, visible=name != "change_score",
            )
        )  # fmt: skip
    outputs["project"] = write_text(
        project_document(title, run_crs, run_extent, layers), out_dir / PROJECT_NAME
    )
    return outputs
