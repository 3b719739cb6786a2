"""Hotspots: man-made change patches (classes 1-3) as polygons with the attributes planners filter on."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import date

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
from odc.geo.geobox import GeoBox
from scipy import ndimage
from shapely.geometry import shape
from shapely.ops import unary_union

from imagery.change import drop_small_patches
from imagery.export import CHANGE_CLASSES, MAN_MADE_CLASSES
from imagery.grid import pixel_area_m2

HOTSPOT_COLUMNS = [
    "id", "change_type", "area_m2", "score_mean", "score_max", "confidence",
    "centroid_lon", "centroid_lat", "district", "ubigeo", "before_date", "after_date",
    "first_seen", "last_seen", "status", "priority",
]  # fmt: skip

_EIGHT = np.ones((3, 3), dtype=bool)

#: What earlier runs saw: hotspot id -> (first_seen, last_seen). Supplied by the run ledger; without
#: one every hotspot is new (first_seen = last_seen = this run's after date).
SeenBefore = Mapping[str, tuple[date, date]]


def remove_small_patches(classes: np.ndarray, min_pixels: int) -> np.ndarray:
    """Set change patches smaller than `min_pixels` (8-connected, man-made and natural groups
    sieved separately) to 0, in place; returns `classes`."""
    for group in (MAN_MADE_CLASSES, (4, 5, 6)):
        classes[...] = drop_small_patches(classes, group, min_pixels)
    return classes


def confidence(score_mean: float) -> str:
    """low / medium / high from the mean change score of a patch."""
    return "high" if score_mean >= 0.8 else "medium" if score_mean >= 0.65 else "low"


def stable_id(change_class: int, x: float, y: float) -> str:
    """An id that stays the same across runs for the same patch (centroid on a 50 m lattice)."""
    key = f"{change_class}:{round(x / 50.0)}:{round(y / 50.0)}"
    return "VG-" + hashlib.sha1(key.encode()).hexdigest()[:10]


def extract_hotspots(
    classes: np.ndarray,
    score: np.ndarray,
    gbox: GeoBox,
    *,
    before_date: date | None,
    after_date: date | None,
) -> gpd.GeoDataFrame:
    """One polygon per 8-connected man-made change patch, with attributes, in the grid's CRS."""
    man_made = np.isin(classes, MAN_MADE_CLASSES)
    labels, n = ndimage.label(man_made, structure=_EIGHT)
    if n == 0:
        return gpd.GeoDataFrame(columns=[*HOTSPOT_COLUMNS, "geometry"], geometry="geometry", crs=gbox.crs)
    index = np.arange(1, n + 1)
    pixel_area = pixel_area_m2(gbox)
    # Statistics over the changed pixels only (a few percent of the grid): no full-grid copies.
    changed = np.flatnonzero(man_made)
    label_of = labels.ravel()[changed]
    score_of = score.ravel()[changed]
    score_of = np.where(np.isfinite(score_of), score_of, 0).astype(np.float32)
    counts = np.bincount(label_of, minlength=n + 1)[1:]
    mean = np.bincount(label_of, weights=score_of, minlength=n + 1)[1:] / counts
    peak = np.zeros(n + 1, np.float32)
    np.maximum.at(peak, label_of, score_of)
    peak = peak[1:]
    class_of = classes.ravel()[changed]
    per_class = np.stack(
        [np.bincount(label_of[class_of == c], minlength=n + 1)[1:] for c in MAN_MADE_CLASSES]
    )
    del changed, label_of, score_of, class_of
    dominant = np.asarray(MAN_MADE_CLASSES)[per_class.argmax(axis=0)]
    polygons: dict[int, list[object]] = {}
    for geom, value in rasterio.features.shapes(
        labels if labels.dtype == np.int32 else labels.astype(np.int32),
        mask=man_made, connectivity=8, transform=gbox.affine,
    ):  # fmt: skip
        polygons.setdefault(int(value), []).append(shape(geom))
    geoms = [unary_union(polygons[i]) for i in index]
    frame = gpd.GeoDataFrame(
        {
            "change_class": dominant.astype(int),
            "change_type": [CHANGE_CLASSES[int(c)][0] for c in dominant],
            "area_m2": (counts * pixel_area).round(1),
            "score_mean": mean.round(4),
            "score_max": peak.round(4),
        },
        geometry=geoms,
        crs=gbox.crs,
    )
    cent = frame.geometry.centroid
    lonlat = cent.to_crs(4326)
    frame["id"] = [stable_id(c, p.x, p.y) for c, p in zip(frame["change_class"], cent, strict=True)]
    frame["confidence"] = [confidence(m) for m in frame["score_mean"]]
    frame["centroid_lon"] = lonlat.x.round(6)
    frame["centroid_lat"] = lonlat.y.round(6)
    frame["district"] = None
    frame["ubigeo"] = None
    frame["before_date"] = before_date.isoformat() if before_date else None
    frame["after_date"] = after_date.isoformat() if after_date else None
    frame["first_seen"] = frame["after_date"]
    frame["last_seen"] = frame["after_date"]
    frame["status"] = "new"
    return rank(frame)[[*HOTSPOT_COLUMNS, "geometry"]]


def mark_history(frame: gpd.GeoDataFrame, seen: SeenBefore | None) -> gpd.GeoDataFrame:
    """Set first_seen, last_seen and status (new / recurring) from what earlier runs saw.

    This run's sighting is its after date; a hotspot seen before keeps its earliest date and
    becomes "recurring" (a backfill of an older date can move first_seen earlier)."""
    out = frame.copy()
    if out.empty or not seen:
        return out
    dates = out["after_date"]
    first, last, status = [], [], []
    for hid, now in zip(out["id"], dates, strict=True):
        earlier = seen.get(hid)
        if earlier is None:
            first.append(now)
            last.append(now)
            status.append("new")
            continue
        candidates = [d.isoformat() for d in earlier] + ([now] if now else [])
        first.append(min(candidates))
        last.append(max(candidates))
        status.append("recurring")
    out["first_seen"], out["last_seen"], out["status"] = first, last, status
    return out


def rank(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Priority 1 = the patch a patrol should visit first: largest area x mean score."""
    weight = frame["area_m2"] * frame["score_mean"]
    order = weight.sort_values(ascending=False, kind="stable").index
    frame = frame.loc[order].reset_index(drop=True)
    frame["priority"] = np.arange(1, len(frame) + 1)
    return frame


def attribute_districts(
    hotspots: gpd.GeoDataFrame,
    districts: gpd.GeoDataFrame,
    name_field: str = "district",
    code_field: str | None = "ubigeo",
    *,
    key: str = "id",
) -> gpd.GeoDataFrame:
    """Give each polygon (hotspot or grid cell, identified by `key`) the district holding most of
    its area, as `district` and `ubigeo`."""
    if hotspots.empty:
        return hotspots
    dist = districts.to_crs(hotspots.crs)[[name_field, *([code_field] if code_field else []), "geometry"]]
    dist = dist.rename(columns={name_field: "_name", **({code_field: "_code"} if code_field else {})})
    parts = gpd.overlay(hotspots[[key, "geometry"]], dist, how="intersection", keep_geom_type=True)
    if parts.empty:
        return hotspots
    parts["_area"] = parts.geometry.area
    best = parts.sort_values("_area", ascending=False).drop_duplicates(key).set_index(key)
    out = hotspots.copy()
    out["district"] = out[key].map(best["_name"]).astype(object)
    if code_field:
        out["ubigeo"] = out[key].map(best["_code"]).astype(object)
    return out.where(pd.notna(out), None)


def summarise_by(frame: gpd.GeoDataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Count, total area and top score per group (for the report)."""
    if frame.empty:
        return pd.DataFrame(columns=[*keys, "count", "area_m2", "score_max"])
    return (
        frame.groupby(list(keys), dropna=False)
        .agg(count=("id", "size"), area_m2=("area_m2", "sum"), score_max=("score_max", "max"))
        .reset_index()
        .sort_values("area_m2", ascending=False)
    )
