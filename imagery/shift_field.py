"""Per-tile co-registration: one global model from every tile's tie points, corrected tile by tile.

Each processing tile contributes its tie points to the global fit (translation or affine, see
`coregister.fit_model`). A tile with enough reliable points whose mean residual about the global
model is significant gets its own correction at its centre; the others fall back to the global
model (zero correction). Corrections are interpolated bilinearly between tile centres, so the
field is smooth and a function of grid coordinates only: tiles stay seamless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from scipy.stats import chi2

from imagery.config import CoregParams
from imagery.coregister import KnotGrid, MatchOptions, ShiftModel, TiePoints, apply_shift, fit_model

#: Significance of a per-tile correction (chi-square, 2 dof) before it replaces the global model.
LOCAL_P_VALUE = 0.001


@dataclass(frozen=True)
class TilePoints:
    """The tie points matched inside one processing tile, with the tile's place in the tile grid."""

    name: str
    index: tuple[int, int]  # (tile row, tile column)
    centre: tuple[float, float]  # global (row, col) of the tile centre
    points: TiePoints


class TileShift(BaseModel):
    """Co-registration quality and result for one tile."""

    tile: str
    row: float = Field(description="Tile centre row in the run grid.")
    col: float = Field(description="Tile centre column in the run grid.")
    n_windows: int = Field(ge=0, description="Matching windows examined in the tile.")
    n_tie_points: int = Field(ge=0, description="Reliable tie points kept in the tile.")
    dx_px: float = Field(description="Shift east at the tile centre (global model + correction).")
    dy_px: float = Field(description="Shift south at the tile centre (global model + correction).")
    correction_px: tuple[float, float] = Field(description="(dx, dy) added to the global model here.")
    rmse_px: float = Field(ge=0, description="RMS of the kept tie points about the tile's shift.")
    source: Literal["local", "global"] = Field(description="Own estimate, or the global fallback.")


class ShiftField(BaseModel):
    """Shift of the after image over the run grid: global model + per-tile corrections (JSON-ready)."""

    global_model: ShiftModel = Field(default_factory=ShiftModel)
    knot_rows: list[float] = Field(default_factory=lambda: [0.0])
    knot_cols: list[float] = Field(default_factory=lambda: [0.0])
    correction_dx: list[list[float]] = Field(default_factory=lambda: [[0.0]])
    correction_dy: list[list[float]] = Field(default_factory=lambda: [[0.0]])
    tiles: list[TileShift] = Field(default_factory=list)

    def knots(self) -> KnotGrid:
        """The corrections as the resampler's knot grid."""
        arrays = (self.knot_rows, self.knot_cols, self.correction_dx, self.correction_dy)
        return KnotGrid(*(np.asarray(a, dtype=np.float64) for a in arrays))

    def shift_at(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dx, dy) in pixels at global grid coordinates."""
        gx, gy = self.global_model.shift_at(rows, cols)
        cx, cy = self.knots().at(rows, cols)
        return gx + cx, gy + cy

    def apply(
        self,
        bands: np.ndarray,
        origin: tuple[int, int] = (0, 0),
        *,
        gain: Sequence[float] | None = None,
        offset: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Resample an after window (..., H, W) at `origin` onto the reference grid; with `gain` and
        `offset` (per band) normalised in the same pass (see `coregister.apply_shift`)."""
        return apply_shift(
            bands, self.global_model, origin=origin, knots=self.knots(), gain=gain, offset=offset
        )

    def quality(self, pixel_size_m: float | None) -> dict[str, Any]:
        """The numbers a reader of a run checks: model, tie points, per-tile sources, residuals.

        Metres (+x east, +y north) only when the grid is projected (`pixel_size_m` given)."""
        g = self.global_model
        local = [t for t in self.tiles if t.source == "local"]
        corr = [float(np.hypot(*t.correction_px)) for t in local]
        metres = (
            {} if pixel_size_m is None else {"dx_m": g.dx_px * pixel_size_m, "dy_m": -g.dy_px * pixel_size_m}
        )
        return {
            "method": g.method,
            "dx_px": g.dx_px,
            "dy_px": g.dy_px,
            **metres,
            "n_windows": g.n_windows,
            "n_tie_points": g.n_tie_points,
            "n_rejected": g.n_rejected,
            "rmse_px": g.rmse_px,
            "tiles_local": len(local),
            "tiles_global_fallback": len(self.tiles) - len(local),
            "max_local_correction_px": max(corr, default=0.0),
        }


def fit_shift_field(
    tiles: Sequence[TilePoints],
    params: CoregParams,
    *,
    fallback: ShiftModel | None = None,
    options: MatchOptions | None = None,
) -> ShiftField:
    """Global model from all tie points (or `fallback` when they are too few), then per-tile
    corrections where a tile's own points disagree significantly with it."""
    opts = options or MatchOptions()
    pooled = concat_tie_points([t.points for t in tiles])
    model = fit_model(pooled, params, floor_px=opts.outlier_floor_px) if len(pooled.dx) else None
    if model is None:
        model = fallback or ShiftModel(n_rejected=int(pooled.reliable.sum()), n_windows=len(pooled.dx))
    shape = (max((t.index[0] for t in tiles), default=0) + 1, max((t.index[1] for t in tiles), default=0) + 1)
    rows, cols = np.zeros(shape[0]), np.zeros(shape[1])
    cdx, cdy = np.zeros(shape), np.zeros(shape)
    results = []
    for t in tiles:
        rows[t.index[0]], cols[t.index[1]] = t.centre
        tile_shift = _tile_shift(t, model, params, opts)
        cdx[t.index], cdy[t.index] = tile_shift.correction_px
        results.append(tile_shift)
    if not (params.per_tile and (cdx.any() or cdy.any())):
        rows, cols, cdx, cdy = np.zeros(1), np.zeros(1), np.zeros((1, 1)), np.zeros((1, 1))
    return ShiftField(
        global_model=model, knot_rows=rows.tolist(), knot_cols=cols.tolist(),
        correction_dx=cdx.tolist(), correction_dy=cdy.tolist(), tiles=results,
    )  # fmt: skip


def _tile_shift(tile: TilePoints, model: ShiftModel, params: CoregParams, opts: MatchOptions) -> TileShift:
    """One tile's correction about the global model: its sigma-clipped mean residual, if significant."""
    tp = tile.points
    gx, gy = model.shift_at(tp.rows, tp.cols)
    rx, ry = tp.dx - gx, tp.dy - gy
    keep = tp.reliable.copy()
    for _ in range(4):
        if keep.sum() < 2:
            break
        res = np.hypot(rx - np.mean(rx[keep]), ry - np.mean(ry[keep]))
        sigma = float(np.median(res[keep])) / 1.1774  # median norm of a 2-D normal is 1.1774 sigma
        keep = tp.reliable & (res <= max(3.5 * sigma, opts.outlier_floor_px))
    n = int(keep.sum())
    mx = float(np.mean(rx[keep])) if n else 0.0
    my = float(np.mean(ry[keep])) if n else 0.0
    spread = _rms(rx[keep] - mx, ry[keep] - my)
    local = n >= params.min_tie_points and model.method != "none" and params.per_tile
    if local:
        # Standard error of the mean per axis, floored by the global fit's own scatter.
        se = max(spread, model.rmse_px, 1e-3) / np.sqrt(2 * n)
        stat = (mx / se) ** 2 + (my / se) ** 2
        local = stat > chi2.ppf(1 - LOCAL_P_VALUE, 2) and np.hypot(mx, my) >= params.min_local_effect_px
    corr = (mx, my) if local else (0.0, 0.0)
    cx, cy = model.shift_at(np.array([tile.centre[0]]), np.array([tile.centre[1]]))
    return TileShift(
        tile=tile.name, row=tile.centre[0], col=tile.centre[1], n_windows=len(tp.dx), n_tie_points=n,
        dx_px=float(cx[0]) + corr[0], dy_px=float(cy[0]) + corr[1], correction_px=corr,
        rmse_px=spread if local else _rms(rx[keep], ry[keep]),
        source="local" if local else "global",
    )  # fmt: skip


def _rms(dx: np.ndarray, dy: np.ndarray) -> float:
    """Root mean square length of residual vectors (0 for none)."""
    return float(np.sqrt(np.mean(dx**2 + dy**2))) if dx.size else 0.0


def concat_tie_points(parts: Sequence[TiePoints]) -> TiePoints:
    """All tie points of several tiles as one set."""
    if not parts:
        empty = np.empty(0)
        return TiePoints(empty, empty, empty, empty, empty, empty, np.empty(0, dtype=bool))
    return TiePoints(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in TiePoints.__dataclass_fields__)
    )
