"""Open a Vigía run in real QGIS and report what QGIS sees, as JSON on stdout.

Runs under Debian's /usr/bin/python3 (python3-qgis), not the project's venv:
    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_check.py RUN_DIR OUT_DIR
Every layer file is opened on its own (so QGIS loads the .qml sidecar or the GeoPackage default
style, as for a user who drags it in), then vigia.qgs is read and rendered to OUT_DIR/project.png.
The test (tests/test_layers_qgis.py) asserts on the report; this script only observes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayer,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor


def renderer_facts(layer: QgsMapLayer) -> dict[str, Any]:
    """Renderer type and its classes (labels), for vector and raster layers."""
    if isinstance(layer, QgsVectorLayer):
        r = layer.renderer()
        facts: dict[str, Any] = {"renderer": r.type(), "labels_enabled": layer.labelsEnabled()}
        if r.type() == "categorizedSymbol":
            facts |= {"attribute": r.classAttribute(), "classes": [c.label() for c in r.categories()],
                      "colors": [c.symbol().color().name() for c in r.categories()]}  # fmt: skip
        elif r.type() == "graduatedSymbol":
            facts |= {"attribute": r.classAttribute(), "classes": [g.label() for g in r.ranges()]}
        return facts
    r = layer.renderer()
    facts = {"renderer": r.type()}
    if r.type() == "paletted":
        facts["classes"] = [c.label for c in r.classes()]
        facts["colors"] = {str(int(c.value)): c.color.name() for c in r.classes()}
    elif r.type() == "singlebandpseudocolor":
        facts["classes"] = [item.label for item in r.shader().rasterShaderFunction().colorRampItemList()]
    return facts


def layer_facts(layer: QgsMapLayer) -> dict[str, Any]:
    """Validity, CRS, size and style of one layer."""
    facts: dict[str, Any] = {"valid": layer.isValid(), "crs": layer.crs().authid(), "name": layer.name()}
    if not layer.isValid():
        return facts
    if isinstance(layer, QgsVectorLayer):
        facts |= {"features": layer.featureCount(), "fields": [f.name() for f in layer.fields()],
                  "geometry_type": layer.geometryType()}  # fmt: skip
    elif isinstance(layer, QgsRasterLayer):
        facts |= {"width": layer.width(), "height": layer.height(), "bands": layer.bandCount()}
    return facts | renderer_facts(layer)


def render(
    layers: list[QgsMapLayer], extent: QgsRectangle, crs: Any, path: Path, size: int = 800
) -> dict[str, Any]:
    """Render layers on white to a PNG; report the share of non-white pixels (sampled)."""
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(crs)
    settings.setExtent(extent)
    settings.setOutputSize(QSize(size, size))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    image.save(str(path), "PNG")
    white = QColor(255, 255, 255).rgb()
    sampled = [(x, y) for x in range(0, image.width(), 4) for y in range(0, image.height(), 4)]
    coloured = sum(image.pixel(x, y) != white for x, y in sampled)
    return {"png": str(path), "non_white_share": coloured / len(sampled), "errors": len(job.errors())}


def gpkg_feature_tables(path: Path) -> list[str]:
    """The vector layers a GeoPackage declares (its gpkg_contents table)."""
    import sqlite3

    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT table_name FROM gpkg_contents WHERE data_type = 'features'").fetchall()
    return sorted(r[0] for r in rows)


def main(run: Path, out: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"qgis": Qgis.QGIS_VERSION, "files": {}, "project": {}}
    files: dict[str, QgsMapLayer] = {}
    for name in ("change_score", "change_class"):
        files[f"{name}.tif"] = QgsRasterLayer(str(run / f"{name}.tif"), name, "gdal")
    for name in ("hotspots", "priority_grid"):
        files[f"{name}.geojson"] = QgsVectorLayer(str(run / f"{name}.geojson"), name, "ogr")
    for name in gpkg_feature_tables(run / "vigia.gpkg"):
        files[f"vigia.gpkg|{name}"] = QgsVectorLayer(f"{run / 'vigia.gpkg'}|layername={name}", name, "ogr")
    for key, layer in files.items():
        report["files"][key] = layer_facts(layer)

    project = QgsProject.instance()
    report["project"]["read"] = project.read(str(run / "vigia.qgs"))
    report["project"]["crs"] = project.crs().authid()
    root = project.layerTreeRoot()
    report["project"]["groups"] = {g.name(): [n.name() for n in g.children()] for g in root.findGroups()}
    layers = {}
    for layer in project.mapLayers().values():
        layers[layer.id()] = layer_facts(layer) | {"source": layer.source()}
    report["project"]["layers"] = layers
    visible = [n.layer() for n in root.findLayers() if n.isVisible()]
    extent = QgsRectangle()
    for layer in visible:
        extent.combineExtentWith(layer.extent())
    report["project"]["render"] = render(visible, extent, project.crs(), out / "project.png")
    report["project"]["layer_renders"] = {
        layer.id(): render([layer], extent, project.crs(), out / f"{layer.id()}.png", size=400)[
            "non_white_share"
        ]
        for layer in visible
    }
    return report


if __name__ == "__main__":
    qgs = QgsApplication([], False)
    qgs.initQgis()
    result = main(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(result))
    sys.stdout.flush()
    qgs.exitQgis()
