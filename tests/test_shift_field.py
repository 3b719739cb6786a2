"""Per-tile co-registration: local deviations found tile by tile, global fallback, seamless field."""

from __future__ import annotations

import numpy as np

from imagery.config import CoregParams
from imagery.coregister import KnotGrid, ShiftModel, apply_shift, match_windows
from imagery.shift_field import ShiftField, TilePoints, fit_shift_field
from tests.test_coregister import fshift, noisy, texture

SMALL = CoregParams(window_px=128, grid_step_px=64)
TILE = 384


def tile_points(ref: np.ndarray, tgt: np.ndarray, params: CoregParams = SMALL) -> list[TilePoints]:
    """Match windows tile by tile (TILE px, no halo) as the pipeline does."""
    out = []
    for i, r0 in enumerate(range(0, ref.shape[0], TILE)):
        for j, c0 in enumerate(range(0, ref.shape[1], TILE)):
            win = np.s_[r0 : r0 + TILE, c0 : c0 + TILE]
            points = match_windows(ref[win], tgt[win], params, origin=(r0, c0))
            centre = (r0 + (TILE - 1) / 2, c0 + (TILE - 1) / 2)
            out.append(TilePoints(f"r{i}c{j}", (i, j), centre, points))
    return out


def piecewise(ref: np.ndarray, shifts: dict[tuple[int, int], tuple[float, float]]) -> np.ndarray:
    """Target whose content in each TILE x TILE block is shifted by that block's (dx, dy)."""
    tgt = np.empty_like(ref)
    for (i, j), (dx, dy) in shifts.items():
        win = np.s_[i * TILE : (i + 1) * TILE, j * TILE : (j + 1) * TILE]
        tgt[win] = fshift(ref, dx, dy)[win]
    return tgt


def test_a_tile_that_moved_differently_gets_its_own_correction() -> None:
    ref = texture(2 * TILE, seed=3)
    truth = {(0, 0): (0.3, 0.2), (0, 1): (0.3, 0.2), (1, 0): (0.3, 0.2), (1, 1): (1.1, -0.4)}
    field = fit_shift_field(tile_points(noisy(ref, 1), noisy(piecewise(ref, truth), 2)), SMALL)
    for t in field.tiles:
        want = truth[(int(t.tile[1]), int(t.tile[3]))]
        assert abs(t.dx_px - want[0]) < 0.05 and abs(t.dy_px - want[1]) < 0.05, t
        dx, dy = field.shift_at(np.array([t.row]), np.array([t.col]))
        assert abs(dx[0] - want[0]) < 0.05 and abs(dy[0] - want[1]) < 0.05
    odd = next(t for t in field.tiles if t.tile == "r1c1")
    assert odd.source == "local" and np.hypot(*odd.correction_px) > 0.5
    assert field.quality(10.0)["tiles_local"] >= 1


def test_a_uniform_shift_needs_no_local_corrections() -> None:
    ref = texture(2 * TILE, seed=4)
    field = fit_shift_field(tile_points(noisy(ref, 1), noisy(fshift(ref, 0.45, -0.25), 2)), SMALL)
    assert all(t.source == "global" and t.correction_px == (0.0, 0.0) for t in field.tiles)
    assert field.correction_dx == [[0.0]]  # no knots at all: the field is exactly the global model
    g = field.global_model
    assert abs(g.dx_px - 0.45) < 0.02 and abs(g.dy_px + 0.25) < 0.02
    q = field.quality(10.0)
    assert q["tiles_global_fallback"] == 4 and abs(q["dx_m"] - 4.5) < 0.2 and abs(q["dy_m"] - 2.5) < 0.2


def test_a_clouded_tile_falls_back_to_the_global_model() -> None:
    ref = texture(2 * TILE, seed=5)
    tgt = noisy(fshift(ref, 0.6, 0.6), 2)
    tgt[TILE:, TILE:] = np.nan  # one tile entirely under cloud in the after image
    field = fit_shift_field(tile_points(noisy(ref, 1), tgt), SMALL)
    clouded = next(t for t in field.tiles if t.tile == "r1c1")
    assert clouded.source == "global" and clouded.n_tie_points == 0
    assert abs(clouded.dx_px - 0.6) < 0.03 and abs(clouded.dy_px - 0.6) < 0.03


def test_too_few_tie_points_anywhere_uses_the_fallback_model() -> None:
    ref = texture(TILE, seed=6)
    fallback = ShiftModel(dx_px=0.7, dy_px=-0.2, method="global", n_tie_points=1)
    field = fit_shift_field(tile_points(ref, np.full_like(ref, np.nan)), SMALL, fallback=fallback)
    assert field.global_model == fallback
    assert field.shift_at(np.array([10.0]), np.array([10.0]))[0][0] == 0.7


def test_knot_corrections_follow_the_kernel_and_stay_seamless() -> None:
    knots = KnotGrid(
        rows=np.array([50.0, 250.0]), cols=np.array([40.0, 240.0]),
        dx=np.array([[0.0, 0.4], [0.2, -0.3]]), dy=np.array([[0.1, 0.0], [-0.5, 0.3]]),
    )  # fmt: skip
    model = ShiftModel(dx_px=0.25, dy_px=-0.1, method="global")
    rows, cols = np.mgrid[0:300, 0:280].astype(np.float32)
    out = apply_shift(np.stack([cols, rows]), model, knots=knots, order=1)
    cx, cy = knots.at(rows, cols)
    inner = np.s_[2:-2, 2:-2]
    np.testing.assert_allclose(out[0][inner], (cols + 0.25 + cx)[inner], atol=1e-3)
    np.testing.assert_allclose(out[1][inner], (rows - 0.1 + cy)[inner], atol=1e-3)
    # Between the knots the field is bilinear; beyond them it is held at the edge value.
    assert abs(cx[150, 140] - 0.075) < 1e-9 and cx[0, 0] == 0.0 and cx[299, 279] == -0.3
    img = texture(300, seed=7)[:, :280]
    halo = 8
    whole = apply_shift(img, model, knots=knots)
    left = apply_shift(img[:, : 140 + halo], model, knots=knots)
    right = apply_shift(img[:, 140 - halo :], model, origin=(0, 140 - halo), knots=knots)
    np.testing.assert_array_equal(whole[:, :140], left[:, :140])
    np.testing.assert_array_equal(whole[:, 140:], right[:, halo:])


def test_shift_field_round_trips_through_json() -> None:
    ref = texture(2 * TILE, seed=3)
    truth = {(0, 0): (0.3, 0.2), (0, 1): (0.3, 0.2), (1, 0): (0.3, 0.2), (1, 1): (1.1, -0.4)}
    field = fit_shift_field(tile_points(ref, piecewise(ref, truth)), SMALL)
    again = ShiftField.model_validate_json(field.model_dump_json())
    img = texture(2 * TILE, seed=8)
    np.testing.assert_array_equal(field.apply(img), again.apply(img))


def test_per_tile_corrections_can_be_switched_off() -> None:
    ref = texture(2 * TILE, seed=3)
    truth = {(0, 0): (0.3, 0.2), (0, 1): (0.3, 0.2), (1, 0): (0.3, 0.2), (1, 1): (1.1, -0.4)}
    params = SMALL.model_copy(update={"per_tile": False})
    field = fit_shift_field(tile_points(ref, piecewise(ref, truth)), params)
    assert all(t.source == "global" for t in field.tiles) and field.correction_dx == [[0.0]]
