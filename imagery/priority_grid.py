"""Patrol priority grid: man-made change aggregated on fixed squares, ranked for patrol planning.

Squares lie on a lattice anchored at multiples of the cell size in the run grid's CRS, so the same
cell has the same id and outline in every run of an AOI and cells can be compared over time.
"""

from __future__ import annotations

import math
from collections import Counter

import geopandas as gpd
import numpy as np
import pandas as pd
from odc.geo.geobox import GeoBox
from shapely.geometry import box

from imagery.components import strip_bounds
from imagery.export import CLASS_NODATA, MAN_MADE_CLASSES, in_classes
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
    class and score mosaics (cells that span strips are summed), turned into the grid by `frame`."""

    def __init__(self, gbox: GeoBox, cell_m: float = 500.0) -> None:
        self.gbox, self.cell_m = gbox, cell_m
        self.cell = cell_size(gbox, cell_m)
        self.col_cell, self.row_cell = _pixel_cells(gbox, self.cell)
        self._col_starts = np.flatnonzero(np.r_[True, np.diff(self.col_cell) != 0])
        self._changed: list[pd.DataFrame] = []
        self._valid: dict[tuple[int, int], int] = {}

    def add(self, row0: int, classes: np.ndarray, score: np.ndarray) -> None:
        """Take the strip of classes and score that starts at grid row `row0`."""
        row_cell = self.row_cell[row0 : row0 + classes.shape[0]]
        rows, cols = np.nonzero(in_classes(classes, MAN_MADE_CLASSES))
        if rows.size:
            values = np.nan_to_num(score[rows, cols], nan=0.0).astype(np.float64)
            pixels = pd.DataFrame({"i": self.col_cell[cols], "j": row_cell[rows], "score": values})
            self._changed.append(
                pixels.groupby(["i", "j"]).agg(
                    changed_px=("score", "size"), score_sum=("score", "sum"), score_max=("score", "max")
                )
            )
        row_starts = np.flatnonzero(np.r_[True, np.diff(row_cell) != 0])
        row_ends = [*row_starts[1:], len(row_cell)]
        for r0, r1 in zip(row_starts, row_ends, strict=True):
            per_col = (classes[r0:r1] != CLASS_NODATA).sum(axis=0)
            per_cell = np.add.reduceat(per_col, self._col_starts)
            for c0, n in zip(self._col_starts, per_cell, strict=True):
                key = (int(self.col_cell[c0]), int(row_cell[r0]))
                self._valid[key] = self._valid.get(key, 0) + int(n)

    def frame(self, hotspots: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        """Cells holding man-made change, with their attributes, ranked; geometry in the grid's CRS."""
        gbox, cell, cell_m = self.gbox, self.cell, self.cell_m
        if not self._changed:
            empty = {c: pd.Series(dtype=object) for c in GRID_COLUMNS}
            return gpd.GeoDataFrame(empty, geometry=[], crs=gbox.crs)
        parts = pd.concat(self._changed)
        cells = parts.groupby(level=["i", "j"]).agg(
            changed_px=("changed_px", "sum"), score_sum=("score_sum", "sum"), score_max=("score_max", "max")
        )
        cells["valid_px"] = [self._valid.get(k, 0) for k in cells.index]
        px_area = pixel_area_m2(gbox)
        cell_area = px_area * (cell / abs(gbox.resolution.x)) * (cell / abs(gbox.resolution.y))
        if not hotspots.empty:
            cent = hotspots.geometry.centroid
            i, j = np.floor(cent.x / cell).astype(int), np.floor(cent.y / cell).astype(int)
            hot = Counter(zip(i.tolist(), j.tolist(), strict=True))
            cells["hotspot_count"] = [hot.get(k, 0) for k in cells.index]
        else:
            cells["hotspot_count"] = 0
        cells = cells.reset_index()
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
        geoms = [
            box(i * cell, j * cell, (i + 1) * cell, (j + 1) * cell)
            for i, j in zip(cells["i"], cells["j"], strict=True)
        ]
        return gpd.GeoDataFrame(cells[GRID_COLUMNS].reset_index(drop=True), geometry=geoms, crs=gbox.crs)


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
