"""The QGIS project `vigia.qgs`: every layer of a run, styled and grouped, with paths relative to
the project file (the run folder can be moved or copied as a whole). Built as XML text."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyproj import CRS

from imagery.qgis_styles import QGIS_VERSION, element


@dataclass(frozen=True)
class ProjectLayer:
    """One layer of the project: where it is (relative to the project), how it looks, where it sits."""

    layer_id: str
    name: str
    source: str  # e.g. "./change_class.tif" or "./vigia.gpkg|layername=hotspots"
    provider: str  # "gdal" or "ogr"
    crs: str
    extent: tuple[float, float, float, float]
    style: list[ET.Element] = field(default_factory=list)
    group: str = ""
    visible: bool = True

    @property
    def is_raster(self) -> bool:
        return self.provider == "gdal"


def spatialrefsys(crs: str) -> ET.Element:
    """QGIS's description of a CRS (authority id first, WKT as the fall-back)."""
    c = CRS.from_user_input(crs)
    auth = c.to_authority()
    return element(
        "spatialrefsys",
        {"nativeFormat": "Wkt"},
        element("wkt", text=c.to_wkt()),
        element("srid", text=auth[1] if auth else "0"),
        element("authid", text=f"{auth[0]}:{auth[1]}" if auth else ""),
        element("description", text=c.name),
        element("geographicflag", text="true" if c.is_geographic else "false"),
    )


def _extent(tag: str, box: tuple[float, float, float, float]) -> ET.Element:
    return element(
        tag,
        {},
        *(
            element(k, text=repr(float(v)))
            for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)
        ),
    )


def _labels_on(style: Sequence[ET.Element]) -> bool:
    return any(e.tag == "labeling" for e in style)


def map_layer(layer: ProjectLayer) -> ET.Element:
    """The <maplayer> element of one layer, with its style inline."""
    attrs = {"type": "raster" if layer.is_raster else "vector", "hasScaleBasedVisibilityFlag": "0",
             "minScale": "1e+08", "maxScale": "0", "styleCategories": "AllStyleCategories",
             "autoRefreshEnabled": "0", "refreshOnNotifyEnabled": "0"}  # fmt: skip
    if not layer.is_raster:
        attrs |= {"geometry": "Polygon", "wkbType": "MultiPolygon", "readOnly": "0",
                  "labelsEnabled": "1" if _labels_on(layer.style) else "0"}  # fmt: skip
    node = element(
        "maplayer",
        attrs,
        _extent("extent", layer.extent),
        element("id", text=layer.layer_id),
        element("datasource", text=layer.source),
        element("layername", text=layer.name),
        element("srs", {}, spatialrefsys(layer.crs)),
        element("provider", {} if layer.is_raster else {"encoding": "UTF-8"}, text=layer.provider),
    )
    if layer.is_raster:
        node.append(element("noData", {}, element("noDataList", {"bandNo": "1", "useSrcNoData": "1"})))
    node.extend(layer.style)
    return node


def _tree(layers: Sequence[ProjectLayer]) -> ET.Element:
    root = element("layer-tree-group", {}, element("customproperties"))
    groups: dict[str, ET.Element] = {}
    for layer in layers:
        parent = root
        if layer.group:
            if layer.group not in groups:
                groups[layer.group] = element(
                    "layer-tree-group", {"name": layer.group, "checked": "Qt::Checked", "expanded": "1"},
                    element("customproperties"),
                )  # fmt: skip
                root.append(groups[layer.group])
            parent = groups[layer.group]
        parent.append(
            element("layer-tree-layer", {
                "id": layer.layer_id, "name": layer.name, "source": layer.source,
                "providerKey": layer.provider, "expanded": "1",
                "checked": "Qt::Checked" if layer.visible else "Qt::Unchecked",
            }, element("customproperties"))
        )  # fmt: skip
    return root


def project_document(
    title: str, crs: str, extent: tuple[float, float, float, float], layers: Sequence[ProjectLayer]
) -> str:
    """`vigia.qgs` text: `layers` top (drawn last) to bottom, grouped in order of first appearance."""
    srs = spatialrefsys(crs)
    units = "degrees" if CRS.from_user_input(crs).is_geographic else "meters"
    root = element(
        "qgis",
        {"projectname": title, "version": QGIS_VERSION},
        element("homePath", {"path": ""}),
        element("title", text=title),
        element("projectCrs", {}, srs),
        _tree(layers),
        element("mapcanvas", {"name": "theMapCanvas", "annotationsVisible": "1"},
            element("units", text=units), _extent("extent", extent), element("rotation", text="0"),
            element("destinationsrs", {}, spatialrefsys(crs)), element("rendermaptile", text="0")),
        element("projectlayers", {}, *(map_layer(layer) for layer in layers)),
        element("layerorder", {}, *(element("layer", {"id": layer.layer_id}) for layer in layers)),
        element("properties", {},
            element("Paths", {}, element("Absolute", {"type": "bool"}, text="false")),
            element("SpatialRefSys", {}, element("ProjectionsEnabled", {"type": "int"}, text="1")),
            element("WMSServiceTitle", {"type": "QString"}, text=title)),
    )  # fmt: skip
    ET.indent(root)
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        + ET.tostring(root, encoding="unicode")
        + "\n"
    )
