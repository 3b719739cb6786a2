"""Patrol priority grid: man-made change aggregated on fixed squares, ranked for patrol planning.

Squares lie on a lattice anchored at multiples of the cell size in the run grid's CRS, so the same
cell has the same id and outline in every run of an AOI and cells can be compared over time.
"""

from __future__ import annotations

import math
from collections import Counter

import geopandas as gpd
import numba
import numpy as np
import pandas as pd
import shapely
from odc.geo.geobox import GeoBox

from imagery.components import strip_bounds
from imagery.export import CLASS_NODATA, MAN_MADE_CLASSES
from imagery.grid import pixel_area_m2

GRID_COLUMNS = [
    "cell_id", "changed_area_m2", "changed_share", "hotspot_count", "score_max", "score_mean",
    "valid_fraction", "district", "ubigeo", "priority",
]  # fmt: skip

#: Metres per degree, for approximate squares on a geographic run grid.
_M_PER_DEG = 111_320.0


def cell_size(gbox: GeoBox, cell_m: float) -> float:
    """Cell edge in the grid's CRS units (metres; degrees on a geographic grid, approximately)."""
    return cell_m / _M_PER_DEG if gbox.crs is not None and gbox.crs.geographic else cell_m


def _pixel_cells(gbox: GeoBox, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice index of every pixel column (x) and row (y) centre."""
    a = gbox.affine
    xs = a.c + (np.arange(gbox.shape.x) + 0.5) * a.a
    ys = a.f + (np.arange(gbox.shape.y) + 0.5) * a.e
    return np.floor(xs / cell).astype(np.int64), np.floor(ys / cell).astype(np.int64)


class GridStats:
    """Per-cell sums of man-made change and valid pixels, accumulated over row strips of the
    class and score mosaics (cells that span strips are summed), turned into the grid by `frame`.

    One compiled pass per strip into arrays of one number per cell of the run grid. Score sums are
    added as a pandas group-by per strip and one over the strips' sums add them (Kahan compensated),
    as the grid was first computed: its layer stays the same to the bit."""

    def __init__(self, gbox: GeoBox, cell_m: float = 500.0) -> None:
        self.gbox, self.cell_m = gbox, cell_m
        self.cell = cell_size(gbox, cell_m)
        col_cell, row_cell = _pixel_cells(gbox, self.cell)
        self._i0 = int(col_cell.min()) if col_cell.size else 0
        self._j0 = int(row_cell.min()) if row_cell.size else 0
        self._col = col_cell - self._i0
        self._row = row_cell - self._j0
        shape = (int(self._row.max(initial=-1)) + 1, int(self._col.max(initial=-1)) + 1)
        self._changed_px = np.zeros(shape, np.int64)
        self._score_sum = np.zeros(shape, np.float64)
        self._score_comp = np.zeros(shape, np.float64)
        self._score_max = np.full(shape, -np.inf, np.float64)
        self._valid_px = np.zeros(shape, np.int64)
        self._man_made = np.zeros(256, np.bool_)
        self._man_made[list(MAN_MADE_CLASSES)] = True

    def add(self, row0: int, classes: np.ndarray, score: np.ndarray) -> None:
        """Take the strip of classes and score that starts at grid row `row0`."""
        rows = self._row[row0 : row0 + classes.shape[0]]
        if rows.size == 0:
            return
        _add_strip(
            classes, score, self._col, rows, self._man_made, CLASS_NODATA, self._changed_px,
            self._score_sum, self._score_comp, self._score_max, self._valid_px,
        )  # fmt: skip

    def sums(self) -> pd.DataFrame:
        """The cells holding man-made change so far: lattice index (i, j), changed pixels, score sum
        and maximum over them, valid pixels; in no particular order."""
        rows, cols = np.nonzero(self._changed_px)
        return pd.DataFrame(
            {
                "i": cols + self._i0,
                "j": rows + self._j0,
                "changed_px": self._changed_px[rows, cols],
                "score_sum": self._score_sum[rows, cols],
                "score_max": self._score_max[rows, cols],
                "valid_px": self._valid_px[rows, cols],
            }
        )

    def frame(self, hotspots: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        """Cells holding man-made change, with their attributes, ranked; geometry in the grid's CRS."""
        gbox, cell, cell_m = self.gbox, self.cell, self.cell_m
        cells = self.sums()
        if cells.empty:
            empty = {c: pd.Series(dtype=object) for c in GRID_COLUMNS}
            return gpd.GeoDataFrame(empty, geometry=[], crs=gbox.crs)
        px_area = pixel_area_m2(gbox)
        cell_area = px_area * (cell / abs(gbox.resolution.x)) * (cell / abs(gbox.resolution.y))
        if not hotspots.empty:
            cent = hotspots.geometry.centroid
            i, j = np.floor(cent.x / cell).astype(int), np.floor(cent.y / cell).astype(int)
            hot = Counter(zip(i.tolist(), j.tolist(), strict=True))
            keys = zip(cells["i"].tolist(), cells["j"].tolist(), strict=True)
            cells["hotspot_count"] = [hot.get(k, 0) for k in keys]
        else:
            cells["hotspot_count"] = 0
        cells["changed_area_m2"] = (cells["changed_px"] * px_area).round(1)
        cells["changed_share"] = (cells["changed_px"] / cells["valid_px"].clip(lower=1)).round(4)
        cells["score_mean"] = (cells["score_sum"] / cells["changed_px"]).round(4)
        cells["score_max"] = cells["score_max"].round(4)
        cells["valid_fraction"] = (cells["valid_px"] * px_area / cell_area).clip(upper=1).round(4)
        cells["weight"] = cells["score_sum"] * px_area
        cells = cells.sort_values(["weight", "score_max", "i", "j"], ascending=[False, False, True, False])
        cells["priority"] = np.arange(1, len(cells) + 1)
        digits = 0 if cell >= 1 else max(0, -math.floor(math.log10(cell)) + 2)
        cells["cell_id"] = [
            f"{cell_m:g}m_E{i * cell:.{digits}f}_N{j * cell:.{digits}f}"
            for i, j in zip(cells["i"], cells["j"], strict=True)
        ]
        cells["district"] = None
        cells["ubigeo"] = None
        ci, cj = cells["i"].to_numpy(), cells["j"].to_numpy()
        geoms = shapely.box(ci * cell, cj * cell, (ci + 1) * cell, (cj + 1) * cell)  # all cells in one call
        return gpd.GeoDataFrame(cells[GRID_COLUMNS].reset_index(drop=True), geometry=geoms, crs=gbox.crs)


@numba.njit(cache=True, nogil=True)
def _add_strip(
    classes: np.ndarray,
    score: np.ndarray,
    col: np.ndarray,
    rows: np.ndarray,
    man_made: np.ndarray,
    nodata: int,
    changed_px: np.ndarray,
    score_sum: np.ndarray,
    score_comp: np.ndarray,
    score_max: np.ndarray,
    valid_px: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """`GridStats.add` for one strip: `col`/`rows` give each pixel column's and row's cell.

    A pandas group-by sum of the strip's changed pixels (row-major order), then a second one over
    the strips, both with pandas' Kahan compensation (`_kahan_add`) so the sums match it to the bit."""
    r_lo, r_hi = min(rows[0], rows[-1]), max(rows[0], rows[-1])
    shape = (r_hi - r_lo + 1, changed_px.shape[1])
    count = np.zeros(shape, np.int64)
    total = np.zeros(shape, np.float64)
    comp = np.zeros(shape, np.float64)
    top = np.full(shape, -np.inf, np.float64)
    big = np.float64(np.finfo(np.float32).max)
    for y in range(classes.shape[0]):
        r = rows[y] - r_lo
        for x in range(classes.shape[1]):
            c = classes[y, x]
            if c != nodata:
                valid_px[r + r_lo, col[x]] += 1
            if man_made[c]:
                v = float(score[y, x])
                v = 0.0 if np.isnan(v) else big if v == np.inf else -big if v == -np.inf else v
                k = col[x]
                count[r, k] += 1
                _kahan_add(total, comp, r, k, v)
                top[r, k] = max(top[r, k], v)
    for r in range(shape[0]):
        for k in range(shape[1]):
            if count[r, k]:
                changed_px[r + r_lo, k] += count[r, k]
                _kahan_add(score_sum, score_comp, r + r_lo, k, total[r, k])
                score_max[r + r_lo, k] = max(score_max[r + r_lo, k], top[r, k])


@numba.njit(cache=True, nogil=True, inline="always")
def _kahan_add(total: np.ndarray, comp: np.ndarray, r: int, k: int, value: float) -> None:  # pragma: no cover
    """Add `value` to `total[r, k]` as pandas' grouped sum does (Kahan, compensation in `comp`)."""
    y = value - comp[r, k]
    t = total[r, k] + y
    comp[r, k] = t - total[r, k] - y
    if comp[r, k] != comp[r, k]:
        comp[r, k] = 0.0  # an infinite value: pandas drops the compensation
    total[r, k] = t


def priority_grid(
    classes: np.ndarray,
    score: np.ndarray,
    gbox: GeoBox,
    hotspots: gpd.GeoDataFrame,
    cell_m: float = 500.0,
    *,
    strip_rows: int | None = None,
) -> gpd.GeoDataFrame:
    """Cells holding man-made change (classes 1-3) with changed area, share of the cell's valid
    area, hotspot count (by centroid), max and mean score, ranked: priority 1 has the largest
    score-weighted changed area. Geometry in the grid's CRS."""
    stats = GridStats(gbox, cell_m)
    for row0, row1 in strip_bounds(classes.shape[0], strip_rows):
        stats.add(row0, classes[row0:row1], score[row0:row1])
    return stats.frame(hotspots)
