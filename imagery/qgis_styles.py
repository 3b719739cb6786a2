"""QGIS styles of the published layers, as QML elements built in Python (QGIS is not needed to run).

Each function returns the style elements of one layer (renderer, labels); `qml_document` wraps them
into a `.qml` sidecar and `imagery.qgis_project` embeds the same elements into `vigia.qgs`, so the
sidecars, the GeoPackage default styles and the project always agree.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from imagery.export import CHANGE_CLASSES, MAN_MADE_CLASSES

QGIS_VERSION = "3.22.0"
#: Planner-facing names of the change classes (legend entries).
CLASS_LABELS = {code: name for code, (name, _) in CHANGE_CLASSES.items()}
#: Patrol priority classes of the grid: (lowest rank, highest rank, legend, RGB).
PRIORITY_BANDS: tuple[tuple[int, int, str, str], ...] = (
    (1, 5, "priority 1-5", "128,0,38"),
    (6, 20, "priority 6-20", "227,26,28"),
    (21, 50, "priority 21-50", "253,141,60"),
    (51, 1_000_000, "priority > 50", "254,217,118"),
)


def element(
    tag: str, attrib: dict[str, str] | None = None, *children: ET.Element, text: str | None = None
) -> ET.Element:
    """An XML element with attributes, children and text in one call."""
    node = ET.Element(tag, attrib or {})
    node.extend(children)
    if text is not None:
        node.text = text
    return node


def _rgba(rgba: Sequence[int]) -> str:
    return ",".join(str(int(v)) for v in rgba)


def _options(**values: str) -> ET.Element:
    return element(
        "Option",
        {"type": "Map"},
        *(element("Option", {"type": "QString", "name": k, "value": v}) for k, v in values.items()),
    )


def fill_symbol(
    name: str, fill: str, outline: str, width_mm: float = 0.4, style: str = "solid"
) -> ET.Element:
    """A simple fill symbol: colours as 'r,g,b,a'."""
    layer = element(
        "layer",
        {"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"},
        _options(
            color=fill, outline_color=outline, outline_width=f"{width_mm:g}", outline_width_unit="MM",
            outline_style="solid", style=style, joinstyle="miter",
        ),
    )  # fmt: skip
    return element(
        "symbol",
        {"type": "fill", "name": name, "alpha": "1", "clip_to_extent": "1", "force_rhr": "0"},
        layer,
    )


def _labels(expression: str, *, size_pt: float = 8.0, max_scale: int = 0) -> ET.Element:
    """Simple labels from an expression, with a white buffer; shown above 1:max_scale if given."""
    text_style = element(
        "text-style",
        {
            "fieldName": expression, "isExpression": "1", "fontSize": f"{size_pt:g}",
            "fontSizeUnit": "Point", "textColor": "30,30,30,255", "fontWeight": "75", "textOpacity": "1",
        },
        element("text-buffer", {"bufferDraw": "1", "bufferSize": "0.8", "bufferSizeUnits": "MM",
                            "bufferColor": "255,255,255,220", "bufferOpacity": "1"}),
    )  # fmt: skip
    rendering = {"obstacle": "1", "fontLimitPixelSize": "0", "upsidedownLabels": "0"}
    if max_scale:
        rendering |= {"scaleVisibility": "1", "scaleMin": "1", "scaleMax": str(max_scale)}
    settings = element(
        "settings",
        {"calloutType": "simple"},
        text_style,
        element("placement", {"placement": "1", "centroidInside": "1", "centroidWhole": "0"}),
        element("rendering", rendering),
    )
    return element("labeling", {"type": "simple"}, settings)


def hotspot_style() -> list[ET.Element]:
    """Hotspots by change type in the class colours, labelled with their priority when zoomed in."""
    categories, symbols = [], []
    for i, code in enumerate(MAN_MADE_CLASSES):
        name, rgba = CHANGE_CLASSES[code]
        categories.append(
            element("category", {"render": "true", "symbol": str(i), "value": name, "label": name})
        )
        symbols.append(fill_symbol(str(i), _rgba((*rgba[:3], 90)), _rgba(rgba), 0.5))
    renderer = element(
        "renderer-v2",
        {"type": "categorizedSymbol", "attr": "change_type", "symbollevels": "0", "enableorderby": "0",
         "forceraster": "0"},
        element("categories", {}, *categories),
        element("symbols", {}, *symbols),
    )  # fmt: skip
    return [renderer, _labels('"priority"', max_scale=50_000), element("layerGeometryType", text="2")]


def priority_grid_style() -> list[ET.Element]:
    """Grid cells coloured by patrol priority band (1-5 darkest), labelled with the rank."""
    ranges, symbols = [], []
    for i, (low, high, label, rgb) in enumerate(PRIORITY_BANDS):
        ranges.append(
            element("range", {"lower": f"{low - 0.5:g}", "upper": f"{high + 0.5:g}", "symbol": str(i),
                          "label": label, "render": "true"})
        )  # fmt: skip
        symbols.append(fill_symbol(str(i), f"{rgb},150", "80,80,80,200", 0.2))
    method = element(
        "classificationMethod",
        {"id": "EqualInterval"},
        element("symmetricMode", {"enabled": "0", "symmetrypoint": "0", "astride": "0"}),
        element("labelFormat", {"format": "%1 - %2", "labelprecision": "0", "trimtrailingzeroes": "1"}),
        element("parameters", {}, element("Option")),
        element("extraInformation"),
    )
    renderer = element(
        "renderer-v2",
        {"type": "graduatedSymbol", "attr": "priority", "graduatedMethod": "GraduatedColor",
         "symbollevels": "0", "enableorderby": "0", "forceraster": "0"},
        element("ranges", {}, *ranges),
        element("symbols", {}, *symbols),
        method,
    )  # fmt: skip
    return [
        renderer,
        _labels('"priority"', size_pt=7, max_scale=100_000),
        element("layerGeometryType", text="2"),
    ]


def district_style() -> list[ET.Element]:
    """District outlines (no fill) labelled with the name and the hotspot count."""
    renderer = element(
        "renderer-v2",
        {"type": "singleSymbol", "symbollevels": "0", "enableorderby": "0", "forceraster": "0"},
        element("symbols", {}, fill_symbol("0", "0,0,0,0", "60,60,60,255", 0.6, style="no")),
    )
    label = "\"district\" || ' (' || \"count\" || ')'"
    return [renderer, _labels(label, size_pt=8), element("layerGeometryType", text="2")]


def _raster_pipe(renderer: ET.Element) -> list[ET.Element]:
    return [
        element(
            "pipe",
            {},
            renderer,
            element("brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"}),
            element("huesaturation", {"saturation": "0", "grayscaleMode": "0", "colorizeOn": "0"}),
            element("rasterresampler", {"maxOversampling": "2"}),
            element("resamplingStage", text="resamplingFilter"),
        ),
        element("blendMode", text="0"),
    ]


def class_raster_style() -> list[ET.Element]:
    """Paletted change classes in the colours of the file's colour table; no change and no data clear."""
    entries = [
        element("paletteEntry", {"value": str(code), "color": "#{:02x}{:02x}{:02x}".format(*rgba[:3]),
                             "alpha": str(rgba[3]), "label": name})
        for code, (name, rgba) in CHANGE_CLASSES.items()
        if code not in (0, 255)
    ]  # fmt: skip
    renderer = element(
        "rasterrenderer",
        {"type": "paletted", "band": "1", "opacity": "1", "alphaBand": "-1", "nodataColor": ""},
        element("rasterTransparency"),
        element("colorPalette", {}, *entries),
    )
    return _raster_pipe(renderer)


def score_raster_style(threshold: float = 0.5) -> list[ET.Element]:
    """Change score as a heat ramp: clear below half the decision threshold, dark red at 1."""
    stops = [
        (0.0, "#ffffb2", 0, "0"),
        (threshold / 2, "#fecc5c", 0, f"{threshold / 2:g}"),
        (threshold, "#fd8d3c", 200, f"{threshold:g} (threshold)"),
        (1.0, "#bd0026", 255, "1 (certain change)"),
    ]
    shader = element(
        "colorrampshader",
        {"colorRampType": "INTERPOLATED", "classificationMode": "1", "clip": "0", "minimumValue": "0",
         "maximumValue": "1", "labelPrecision": "2"},
        *(element("item", {"value": f"{v:g}", "color": c, "alpha": str(a), "label": lab})
          for v, c, a, lab in stops),
    )  # fmt: skip
    renderer = element(
        "rasterrenderer",
        {"type": "singlebandpseudocolor", "band": "1", "opacity": "1", "alphaBand": "-1",
         "classificationMin": "0", "classificationMax": "1", "nodataColor": ""},
        element("rasterTransparency"),
        element("minMaxOrigin", {}, element("limits", text="None"), element("extent", text="WholeRaster"),
            element("statAccuracy", text="Estimated"), element("cumulativeCutLower", text="0.02"),
            element("cumulativeCutUpper", text="0.98"), element("stdDevFactor", text="2")),
        element("rastershader", {}, shader),
    )  # fmt: skip
    return _raster_pipe(renderer)


def qml_document(elements: Sequence[ET.Element]) -> str:
    """A `.qml` style file holding the given style elements."""
    attrs = {"version": QGIS_VERSION, "styleCategories": "AllStyleCategories"}
    if any(e.tag == "labeling" for e in elements):
        attrs["labelsEnabled"] = "1"
    root = element("qgis", attrs, *elements)
    ET.indent(root)
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        + ET.tostring(root, encoding="unicode")
        + "\n"
    )
