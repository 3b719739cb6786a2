"""Hotspots: man-made change patches (classes 1-3) as polygons with the attributes planners filter on."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import date

import geopandas as gpd
import numba
import numpy as np
import pandas as pd
import shapely
from odc.geo.geobox import GeoBox
from shapely.geometry.base import BaseGeometry

from imagery.change import NO_CHANGE
from imagery.components import StripComponents, strip_bounds
from imagery.export import CHANGE_CLASSES, MAN_MADE_CLASSES, NATURAL_CLASSES, in_classes
from imagery.grid import pixel_area_m2
from imagery.outlines import label_outlines

HOTSPOT_COLUMNS = [
    "id", "change_type", "area_m2", "score_mean", "score_max", "confidence",
    "centroid_lon", "centroid_lat", "district", "ubigeo", "before_date", "after_date",
    "first_seen", "last_seen", "status", "priority",
]  # fmt: skip

#: The classes sieved together by the minimum mapping unit: man-made change, natural change.
PATCH_GROUPS = (MAN_MADE_CLASSES, NATURAL_CLASSES)

#: What earlier runs saw: hotspot id -> (first_seen, last_seen). Supplied by the run ledger; without
#: one every hotspot is new (first_seen = last_seen = this run's after date).
SeenBefore = Mapping[str, tuple[date, date]]


class PatchSieve:
    """The minimum mapping unit over row strips of the class mosaic: change patches (8-connected,
    man-made classes and natural classes sieved separately) smaller than `min_pixels` become 0,
    exactly as on the whole grid. Feed every strip from the top (`add`), `finish`, then `apply`
    to the same strips; the man-made patches left are the hotspots, numbered 1..`hotspots` in
    raster order of their first pixel."""

    def __init__(self, min_pixels: int) -> None:
        self.min_pixels = max(1, int(min_pixels))
        self._parts = [(group, StripComponents(8)) for group in PATCH_GROUPS]
        self._kept: list[np.ndarray] = []
        self._hotspot_of = np.zeros(1, np.int32)
        self.hotspots = 0
        #: (first row, end row) of each strip added.
        self.strips: list[tuple[int, int]] = []

    def add(self, classes: np.ndarray) -> None:
        """Take the next strip of classes (rows below the previous strip)."""
        row0 = self.strips[-1][1] if self.strips else 0
        self.strips.append((row0, row0 + classes.shape[0]))
        for group, parts in self._parts:
            parts.add(in_classes(classes, group))

    def finish(self) -> None:
        """Resolve the patches across strips."""
        self._kept = []
        for _, parts in self._parts:
            parts.finish()
            kept = parts.sizes >= self.min_pixels
            kept[0] = False
            self._kept.append(kept)
        man_made = self._kept[0]
        self.hotspots = int(man_made.sum())
        self._hotspot_of = np.zeros(man_made.size, np.int32)
        self._hotspot_of[man_made] = np.arange(1, self.hotspots + 1, dtype=np.int32)

    def apply(self, index: int, classes: np.ndarray) -> np.ndarray:
        """Set the small patches of strip `index` to 0, in place; returns the strip's hotspot
        numbers (int32, 0 outside hotspots)."""
        numbers = None
        for (group, parts), kept in zip(self._parts, self._kept, strict=True):
            # Decided per piece of the strip (a few numbers), then one lookup per pixel.
            component = parts.components_of(index)
            drop = ~kept[component]
            drop[0] = False
            hotspot = self._hotspot_of[component] if group == MAN_MADE_CLASSES else None
            if not drop.any() and (hotspot is None or component.size == 1):
                continue  # no small patch to sieve and no hotspot pixel to number
            pieces = parts.pieces(index, in_classes(classes, group))
            if hotspot is None:
                _sieve_pieces(classes, pieces, drop, np.zeros(0, np.int32), np.zeros((0, 0), np.int32))
            else:
                numbers = np.zeros(classes.shape, np.int32)
                _sieve_pieces(classes, pieces, drop, hotspot, numbers)
        return np.zeros(classes.shape, np.int32) if numbers is None else numbers


@numba.njit(cache=True, nogil=True)
def _sieve_pieces(
    classes: np.ndarray, pieces: np.ndarray, drop: np.ndarray, hotspot: np.ndarray, numbers: np.ndarray
) -> None:  # pragma: no cover
    """Set the pixels of the pieces to `drop` to no change in `classes`, and, when `numbers` is not
    empty, write each piece's hotspot number into it (one pass over the strip's piece labels)."""
    number = numbers.size > 0
    for y in range(pieces.shape[0]):
        for x in range(pieces.shape[1]):
            piece = pieces[y, x]
            if piece:
                if drop[piece]:
                    classes[y, x] = NO_CHANGE
                if number:
                    numbers[y, x] = hotspot[piece]


def remove_small_patches(
    classes: np.ndarray, min_pixels: int, *, strip_rows: int | None = None
) -> np.ndarray:
    """Set change patches smaller than `min_pixels` (8-connected, man-made and natural groups
    sieved separately) to 0, in place; returns `classes`."""
    sieve = PatchSieve(min_pixels)
    strips = strip_bounds(classes.shape[0], strip_rows)
    for row0, row1 in strips:
        sieve.add(classes[row0:row1])
    sieve.finish()
    for index, (row0, row1) in enumerate(strips):
        sieve.apply(index, classes[row0:row1])
    return classes


def confidence(score_mean: float) -> str:
    """low / medium / high from the mean change score of a patch."""
    return "high" if score_mean >= 0.8 else "medium" if score_mean >= 0.65 else "low"


def stable_id(change_class: int, x: float, y: float) -> str:
    """An id that stays the same across runs for the same patch (centroid on a 50 m lattice)."""
    key = f"{change_class}:{round(x / 50.0)}:{round(y / 50.0)}"
    return "VG-" + hashlib.sha1(key.encode()).hexdigest()[:10]


class HotspotStats:
    """Per-hotspot statistics and outlines accumulated over row strips: pixel count, score sum and
    maximum, pixels per man-made class, pixel-centre sums (the centroid) and polygon pieces in
    pixel coordinates, joined across strip boundaries by `frame`."""

    def __init__(self, count: int) -> None:
        n = count + 1
        self.count = count
        self.pixels = np.zeros(n, np.int64)
        self.score_sum = np.zeros(n, np.float64)
        self.score_max = np.zeros(n, np.float32)
        self.per_class = np.zeros((len(MAN_MADE_CLASSES), n), np.int64)
        self.col_sum = np.zeros(n, np.float64)
        self.row_sum = np.zeros(n, np.float64)
        self.pieces: dict[int, list[BaseGeometry]] = {}
        #: Class code -> row of `per_class` (-1: not a man-made class).
        self._kind = np.full(256, -1, np.int64)
        self._kind[list(MAN_MADE_CLASSES)] = np.arange(len(MAN_MADE_CLASSES))

    def add(self, row0: int, hotspots: np.ndarray, classes: np.ndarray, score: np.ndarray) -> None:
        """Take the strip starting at grid row `row0`: hotspot numbers, classes and score."""
        found = _add_hotspot_pixels(
            hotspots, classes, score, row0, self._kind, self.pixels, self.score_sum, self.score_max,
            self.per_class, self.col_sum, self.row_sum,
        )  # fmt: skip
        if not found:
            return
        numbers, polygons = label_outlines(hotspots, row0)
        for number, polygon in zip(numbers.tolist(), polygons, strict=True):
            self.pieces.setdefault(number, []).append(polygon)

    def outlines(self) -> np.ndarray:
        """Every hotspot (1..count, in order) as one valid (Multi)Polygon in pixel coordinates, in a
        canonical form (no collinear vertices, normalised order) so that it does not depend on the
        strips: its pieces made valid, merged, simplified at 0 and normalised, for all hotspots
        with the same number of pieces in one call each."""
        out = np.empty(self.count, dtype=object)
        sizes = np.array([len(self.pieces[i]) for i in range(1, self.count + 1)], np.int64)
        for size in np.unique(sizes):
            numbers = np.flatnonzero(sizes == size) + 1
            pieces = np.empty((numbers.size, int(size)), dtype=object)
            for row, number in enumerate(numbers.tolist()):
                pieces[row] = self.pieces[number]
            merged = shapely.union_all(shapely.make_valid(pieces), axis=1)
            out[numbers - 1] = shapely.normalize(shapely.simplify(merged, 0))
        return out

    def frame(self, gbox: GeoBox, *, before_date: date | None, after_date: date | None) -> gpd.GeoDataFrame:
        """The hotspots as polygons with their attributes, ranked, in the grid's CRS."""
        if self.count == 0:
            return gpd.GeoDataFrame(columns=[*HOTSPOT_COLUMNS, "geometry"], geometry="geometry", crs=gbox.crs)
        pixels = self.pixels[1:]
        dominant = np.asarray(MAN_MADE_CLASSES)[self.per_class[:, 1:].argmax(axis=0)]
        a = gbox.affine

        def to_crs(xy: np.ndarray) -> np.ndarray:
            x, y = xy.T  # the arithmetic of shapely.affinity.affine_transform, for all outlines at once
            return np.stack([a.a * x + a.b * y + a.c, a.d * x + a.e * y + a.f]).T

        geoms = shapely.transform(self.outlines(), to_crs)
        col = self.col_sum[1:] / pixels + 0.5
        row = self.row_sum[1:] / pixels + 0.5
        cx, cy = a.a * col + a.b * row + a.c, a.d * col + a.e * row + a.f
        frame = gpd.GeoDataFrame(
            {
                "change_class": dominant.astype(int),
                "change_type": [CHANGE_CLASSES[int(c)][0] for c in dominant],
                "area_m2": (pixels * pixel_area_m2(gbox)).round(1),
                "score_mean": (self.score_sum[1:] / pixels).round(4),
                "score_max": self.score_max[1:].round(4),
            },
            geometry=geoms,
            crs=gbox.crs,
        )
        lonlat = gpd.GeoSeries(gpd.points_from_xy(cx, cy), crs=gbox.crs).to_crs(4326)
        frame["id"] = [stable_id(c, x, y) for c, x, y in zip(frame["change_class"], cx, cy, strict=True)]
        frame["confidence"] = [confidence(m) for m in frame["score_mean"]]
        frame["centroid_lon"] = lonlat.x.round(6).to_numpy()
        frame["centroid_lat"] = lonlat.y.round(6).to_numpy()
        frame["district"] = None
        frame["ubigeo"] = None
        frame["before_date"] = before_date.isoformat() if before_date else None
        frame["after_date"] = after_date.isoformat() if after_date else None
        frame["first_seen"] = frame["after_date"]
        frame["last_seen"] = frame["after_date"]
        frame["status"] = "new"
        return rank(frame)[[*HOTSPOT_COLUMNS, "geometry"]]


@numba.njit(cache=True, nogil=True)
def _add_hotspot_pixels(
    hotspots: np.ndarray,
    classes: np.ndarray,
    score: np.ndarray,
    row0: int,
    kind: np.ndarray,
    pixels: np.ndarray,
    score_sum: np.ndarray,
    score_max: np.ndarray,
    per_class: np.ndarray,
    col_sum: np.ndarray,
    row_sum: np.ndarray,
) -> bool:  # pragma: no cover
    """`HotspotStats.add`'s sums over the strip's hotspot pixels (`kind`: index of each man-made
    class); the float sums are the strip's, in raster order, then added to the totals (as
    per-strip bincounts made them). Returns whether the strip has a hotspot pixel."""
    n = pixels.size
    strip_score = np.zeros(n)
    strip_col = np.zeros(n)
    strip_row = np.zeros(n)
    found = False
    for y in range(hotspots.shape[0]):
        for x in range(hotspots.shape[1]):
            number = hotspots[y, x]
            if number == 0:
                continue
            found = True
            value = np.float32(score[y, x])
            if not np.isfinite(value):
                value = np.float32(0.0)
            pixels[number] += 1
            strip_score[number] += np.float64(value)
            score_max[number] = max(score_max[number], value)
            k = kind[classes[y, x]]
            if k >= 0:
                per_class[k, number] += 1
            strip_col[number] += x
            strip_row[number] += y + row0
    for number in range(n):
        score_sum[number] += strip_score[number]
        col_sum[number] += strip_col[number]
        row_sum[number] += strip_row[number]
    return found


def extract_hotspots(
    classes: np.ndarray,
    score: np.ndarray,
    gbox: GeoBox,
    *,
    before_date: date | None,
    after_date: date | None,
    strip_rows: int | None = None,
) -> gpd.GeoDataFrame:
    """One polygon per 8-connected man-made change patch, with attributes, in the grid's CRS."""
    found = PatchSieve(1)
    strips = strip_bounds(classes.shape[0], strip_rows)
    for row0, row1 in strips:
        found.add(classes[row0:row1])
    found.finish()
    stats = HotspotStats(found.hotspots)
    for index, (row0, row1) in enumerate(strips):
        strip = classes[row0:row1]  # not changed: every patch is at least 1 px
        stats.add(row0, found.apply(index, strip), strip, score[row0:row1])
    return stats.frame(gbox, before_date=before_date, after_date=after_date)


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
