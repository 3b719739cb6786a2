"""`report.html`: one self-contained page per run for the morning briefing (map, top hotspots,
districts, scenes, coverage, co-registration quality). The map is a PNG embedded as base64."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from rasterio.enums import Resampling

from imagery.export import CHANGE_CLASSES, write_text
from imagery.hotspots import summarise_by

TOP_HOTSPOTS = 25
MAP_PIXELS = 1000

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left}th{background:#f3f3f3}
td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#777}
img.map{max-width:100%;border:1px solid #ccc}
"""


def _rings(geom: Any) -> Iterable[np.ndarray]:
    for poly in getattr(geom, "geoms", [geom]):
        yield np.asarray(poly.exterior.coords)


def map_png(class_raster: Path, hotspots: gpd.GeoDataFrame, districts: gpd.GeoDataFrame | None) -> bytes:
    """The change classes (read from the COG's overviews) with hotspot outlines, the top ten
    priorities numbered, and district outlines, as PNG bytes."""
    with rasterio.open(class_raster) as ds:
        scale = max(1.0, max(ds.width, ds.height) / MAP_PIXELS)
        shape = (max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
        classes = ds.read(1, out_shape=shape, resampling=Resampling.mode)
        left, bottom, right, top = ds.bounds
        crs = ds.crs
    rgba = np.zeros((*classes.shape, 4), np.uint8)
    for code, (_, colour) in CHANGE_CLASSES.items():
        rgba[classes == code] = colour
    rgba[classes == 0] = (235, 235, 235, 255)
    fig = Figure(figsize=(9, 9), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(rgba, extent=(left, right, bottom, top), interpolation="nearest")
    if districts is not None and not districts.empty:
        local = districts.to_crs(crs)
        ax.add_collection(LineCollection([r for g in local.geometry for r in _rings(g)], colors="#555",
                                         linewidths=0.6, linestyles="dashed"))  # fmt: skip
    if not hotspots.empty:
        spots = hotspots.to_crs(crs)
        ax.add_collection(LineCollection([r for g in spots.geometry for r in _rings(g)], colors="black",
                                         linewidths=0.7))  # fmt: skip
        for _, row in spots.nsmallest(10, "priority").iterrows():
            p = row.geometry.representative_point()
            ax.annotate(str(row["priority"]), (p.x, p.y), fontsize=8, fontweight="bold",
                        xytext=(4, 4), textcoords="offset points",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.8})  # fmt: skip
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_xlabel(f"easting (m, {crs.to_string()})")
    ax.set_ylabel("northing (m)")
    ax.ticklabel_format(useOffset=False, style="plain")
    patches = [
        Patch(color="#{:02x}{:02x}{:02x}".format(*CHANGE_CLASSES[c][1][:3]), label=CHANGE_CLASSES[c][0])
        for c in range(1, 7)
    ]
    fig.legend(handles=patches, loc="lower center", ncol=3, fontsize=8, frameon=False)
    ax.set_title(
        "change classes, hotspot outlines (top 10 numbered by priority), districts dashed", fontsize=9
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return '<td class="muted">–</td>'
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, int | np.integer):
        return f'<td class="n">{value:,}</td>'
    if isinstance(value, float | np.floating):
        number = float(value)
        return (
            f'<td class="n">{number:,.3f}</td>' if abs(number) < 1e6 else f'<td class="n">{number:,.0f}</td>'
        )
    return f"<td>{html.escape(str(value))}</td>"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """An HTML table of dict rows (all values escaped)."""
    if not rows:
        return '<p class="muted">none</p>'
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_cell(r.get(c)) for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _key_values(data: Mapping[str, Any]) -> str:
    scalars = [{"item": k, "value": v} for k, v in data.items() if not isinstance(v, dict | list)]
    return table(scalars)


def coregistration_section(coreg: Any) -> str:
    """Whatever run.json records about co-registration: the summary numbers and per-tile rows."""
    if not isinstance(coreg, Mapping) or not coreg:
        return '<p class="muted">not recorded in run.json</p>'
    summary = coreg.get("summary")
    parts = [_key_values(summary if isinstance(summary, Mapping) else coreg)]
    tiles = coreg.get("tiles")
    if isinstance(tiles, list) and tiles and isinstance(tiles[0], Mapping):
        rows = [{k: v for k, v in t.items() if not isinstance(v, dict)} for t in tiles]
        for r in rows:
            for k, v in list(r.items()):
                if isinstance(v, list):
                    r[k] = ", ".join(f"{x:+.3f}" if isinstance(x, float) else str(x) for x in v)
        parts.append(f"<h3>Per tile ({len(rows)})</h3>" + table(rows))
    return "".join(parts)


def district_rows(hotspots: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    """Per-district count, area and top score of the hotspots (hotspots outside every district
    counted under '(none)')."""
    frame = (
        hotspots.assign(district=hotspots["district"].fillna("(none)")) if not hotspots.empty else hotspots
    )
    summary = summarise_by(frame, ["district", "ubigeo"])
    return [
        {"district": r["district"], "ubigeo": r["ubigeo"] if pd.notna(r["ubigeo"]) else None,
         "hotspots": int(r["count"]), "area (ha)": round(float(r["area_m2"]) / 10_000, 2),
         "top score": float(r["score_max"])}
        for _, r in summary.iterrows()
    ]  # fmt: skip


def _hotspot_rows(hotspots: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    rows = []
    for _, h in hotspots.nsmallest(TOP_HOTSPOTS, "priority").iterrows():
        rows.append({
            "priority": int(h["priority"]), "id": h["id"], "type": h["change_type"],
            "district": h["district"],
            "area (ha)": round(float(h["area_m2"]) / 10_000, 2), "score mean": float(h["score_mean"]),
            "score max": float(h["score_max"]), "confidence": h["confidence"], "status": h["status"],
            "first seen": h["first_seen"], "lon, lat": f"{h['centroid_lon']:.5f}, {h['centroid_lat']:.5f}",
        })  # fmt: skip
    return rows


def _class_rows(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    from pyproj import CRS

    pixels = meta.get("class_pixels") or {}
    grid = meta.get("grid") or {}
    px_ha = None
    if grid.get("crs") and CRS.from_user_input(grid["crs"]).is_projected:
        a = grid["affine"]
        px_ha = abs(a[0] * a[4]) / 10_000
    return [
        {
            "class": CHANGE_CLASSES[int(k)][0],
            "pixels": int(v),
            "area (ha)": round(v * px_ha, 1) if px_ha else None,
        }
        for k, v in pixels.items()
        if int(k) in CHANGE_CLASSES and int(k) != 0
    ]


def render_report(meta: Mapping[str, Any], hotspots: gpd.GeoDataFrame, map_image: bytes) -> str:
    """The report page as HTML text."""
    scenes = meta.get("scenes") or {}
    scene_rows = [
        {"period": period, "scene": s.get("id"), "date": s.get("date"), "level": s.get("level"),
         "cloud cover (%)": s.get("cloud_cover"), "cloud mask (SCL)": s.get("cloud_mask"),
         "BOA offset": s.get("boa_offset")}
        for period in ("before", "after") for s in scenes.get(period, [])
    ]  # fmt: skip
    coverage = dict(meta.get("coverage") or {})
    if "valid_fraction" in coverage:
        coverage["masked or no data (%)"] = round(100 * (1 - float(coverage["valid_fraction"])), 2)
    dates = {p: sorted(s.get("date", "") for s in scenes.get(p, [])) for p in ("before", "after")}
    title = f"Vigía run {meta.get('aoi', '')}: {', '.join(dates['before'])} → {', '.join(dates['after'])}"
    notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in meta.get("notes") or [])
    image = base64.b64encode(map_image).decode("ascii")
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">Vigía {html.escape(str(meta.get("vigia_version", "")))} · '
        f"{len(hotspots)} hotspots of man-made change · layers: vigia.qgs (QGIS), vigia.gpkg, "
        "hotspots.geojson, priority_grid.geojson, change_class.tif, change_score.tif</p>",
        f"<ul>{notes}</ul>" if notes else "",
        "<h2>Map</h2>",
        f'<img class="map" alt="change classes and hotspots" src="data:image/png;base64,{image}">',
        f"<h2>Top {min(TOP_HOTSPOTS, len(hotspots))} hotspots</h2>",
        table(_hotspot_rows(hotspots)) if not hotspots.empty else '<p class="muted">no hotspots</p>',
        "<h2>Per district</h2>",
        table(district_rows(hotspots)) if not hotspots.empty else '<p class="muted">no hotspots</p>',
        "<h2>Scenes</h2>",
        table(scene_rows),
        "<h2>Coverage and cloud masking</h2>",
        _key_values(coverage | {"cloud mask applied": meta.get("cloud_mask_applied")}),
        "<h2>Change classes</h2>",
        table(_class_rows(meta)),
        "<h2>Co-registration quality</h2>",
        coregistration_section(meta.get("coregistration")),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )


def write_report(
    out_dir: Path,
    meta: Mapping[str, Any],
    hotspots: gpd.GeoDataFrame,
    districts: gpd.GeoDataFrame | None,
    *,
    image: bytes | None = None,
) -> Path:
    """Write `out_dir/report.html` atomically, with the map `image` (PNG bytes, as `map_png` draws
    them), or drawn here from `out_dir/change_class.tif` when it is None."""
    if image is None:
        image = map_png(out_dir / "change_class.tif", hotspots, districts)
    return write_text(render_report(meta, hotspots, image), out_dir / "report.html")
