"""Change evidence, calibrated score, thresholds, typing and clean-up on synthetic scenes."""

from __future__ import annotations

import numpy as np
import pytest

from imagery.change import (
    BUILT_GAIN,
    HALO_PX,
    MAN_MADE_CLASSES,
    NODATA,
    SOIL_DISTURBANCE,
    VEGETATION_GAIN,
    WATER_CHANGE,
    ChangeModel,
    DetectorParams,
    apply_min_mapping_unit,
    change_classes,
    change_evidence,
    change_score,
    fit_change_model,
    kittler_illingworth_threshold,
    local_structure_change,
    otsu_threshold,
)
from imagery.config import ChangeParams

SOIL = np.array([0.12, 0.16, 0.22, 0.28, 0.38, 0.34], np.float32)  # bright desert / bare soil
VEG = np.array([0.04, 0.07, 0.05, 0.40, 0.22, 0.12], np.float32)
WATER = np.array([0.06, 0.07, 0.05, 0.03, 0.02, 0.01], np.float32)
ROOF = np.array([0.14, 0.15, 0.17, 0.20, 0.24, 0.22], np.float32)  # concrete / roofs


def _pair(seed: int = 0, h: int = 120, w: int = 120):
    """Left half bare soil, top-right vegetation, bottom-right sea; after = before + noise."""
    rng = np.random.default_rng(seed)
    before = np.empty((6, h, w), np.float32)
    before[:] = SOIL[:, None, None]
    before[:, : h // 2, w // 2 :] = VEG[:, None, None]
    before[:, h // 2 :, w // 2 :] = WATER[:, None, None]
    before *= rng.uniform(0.9, 1.1, (1, h, w)).astype(np.float32)  # texture
    after = before + rng.normal(0, 0.004, before.shape).astype(np.float32)
    before += rng.normal(0, 0.004, before.shape).astype(np.float32)
    return before, after


def _params(**kw: object) -> ChangeParams:
    return ChangeParams(model=DetectorParams(**kw).model_dump())  # type: ignore[arg-type]


def test_kittler_illingworth_finds_small_change_class_where_otsu_fails() -> None:
    rng = np.random.default_rng(0)
    n, k = 200_000, 4_000  # 2 % change
    values = np.concatenate([rng.normal(0, 1, n - k), rng.normal(6, 1, k)]).astype(np.float32)
    ki = kittler_illingworth_threshold(values)
    otsu = otsu_threshold(values)
    assert 3.0 < ki < 4.5  # between the modes, where the error is smallest
    assert otsu < 1.5  # Otsu splits the no-change mode: tens of % false alarms
    false_alarm_ki = np.mean(values[: n - k] > ki)
    assert false_alarm_ki < 0.002


def test_kittler_threshold_method_in_model() -> None:
    before, after = _pair()
    after[:, 10:40, 10:40] = ROOF[:, None, None]
    model = fit_change_model(before, after, _params(threshold_method="kittler", structure_radius_px=0))
    dp = DetectorParams()
    assert dp.min_threshold <= model.threshold <= dp.max_threshold
    fixed = fit_change_model(before, after, _params())
    assert fixed.threshold == dp.fixed_threshold


def test_score_is_calibrated_at_threshold_and_planted_change_scores_high() -> None:
    before, after = _pair()
    after[:, 10:40, 10:40] = ROOF[:, None, None]
    params = _params()
    model = fit_change_model(before, after, params)
    score = change_score(before, after, model, params)
    assert score.dtype == np.float32 and score.shape == before.shape[1:]
    assert np.nanmin(score) >= 0 and np.nanmax(score) <= 1
    assert np.median(score[15:35, 15:35]) > 0.99
    assert np.mean(score[60:, :50] > 0.5) < 0.001
    ev = change_evidence(before, after, model, params)
    # score crosses 0.5 where the evidence crosses the fitted threshold
    near = np.abs(ev - model.threshold) < 0.05
    if near.any():
        np.testing.assert_allclose(score[near], 0.5, atol=0.02)
    assert ChangeModel.model_validate_json(model.model_dump_json()) == model


def test_shift_tolerance_suppresses_misregistration() -> None:
    rng = np.random.default_rng(4)
    h = w = 80
    before = (SOIL[:, None, None] * rng.uniform(0.6, 1.4, (1, h, w))).astype(np.float32)
    after = np.roll(before, 1, axis=2) + rng.normal(0, 0.002, before.shape).astype(np.float32)
    model = fit_change_model(before, before + 0.002, _params())
    model = model.model_copy(update={"noise_scale": [0.004] * 6})
    tolerant = change_evidence(before, after, model, DetectorParams(smooth_sigma_px=0))
    strict = change_evidence(before, after, model, DetectorParams(shift_radius_px=0, smooth_sigma_px=0))
    inner = (slice(2, -2), slice(2, -2))
    assert np.median(strict[inner]) > 2 * model.threshold
    assert np.percentile(tolerant[inner], 99) < model.threshold


def test_irmad_evidence_weight_changes_evidence() -> None:
    before, after = _pair()
    after[:, 10:40, 10:40] = ROOF[:, None, None]
    model = fit_change_model(before, after, _params())
    e0 = change_evidence(before, after, model, DetectorParams())
    e1 = change_evidence(before, after, model, DetectorParams(w_irmad=0.5))
    assert not np.allclose(e0, e1)
    assert np.median(e1[15:35, 15:35]) > 3 * model.threshold


def test_local_structure_change_known_answers() -> None:
    rng = np.random.default_rng(6)
    texture = rng.normal(0, 3, (6, 60, 60))  # noise units: local variance ~9 >> structure_c
    unit = np.ones(6)
    inner = (slice(5, -5), slice(5, -5))
    same = local_structure_change(texture, texture + 5, unit, 3, 1.0)  # offset only
    gain = local_structure_change(texture, 1.7 * texture, unit, 3, 1.0)  # contrast term 2g/(1+g^2)
    unrelated = local_structure_change(texture, rng.normal(0, 3, texture.shape), unit, 3, 1.0)
    inverted = local_structure_change(texture, -texture, unit, 3, 1.0)
    flat = local_structure_change(np.zeros_like(texture), np.full_like(texture, 4.0), unit, 3, 1.0)
    assert np.abs(same[inner]).max() < 0.01
    np.testing.assert_allclose(gain[inner], 1 - 2 * 1.7 / (1 + 1.7**2), atol=0.01)
    assert 0.8 < np.median(unrelated[inner]) < 1.2
    assert np.median(inverted[inner]) > 1.8  # 1 - (c - 2 var) / (2 var + c), var ~ 9
    np.testing.assert_allclose(flat, 0.0, atol=1e-6)  # a flat surface that only brightened
    holed = texture.copy()
    holed[2, 30, 30] = np.nan
    out = local_structure_change(holed, holed + 5, unit, 3, 1.0)
    assert np.isnan(out[30, 30]) and np.isfinite(out[29, 30]) and abs(out[29, 30]) < 0.01


def test_structure_factor_keeps_new_objects_and_drops_uniform_field_change() -> None:
    """A field that greens uniformly (phenology) is big CVA change with the same pattern; a
    new block of roofs on the same field rewrites the pattern. Only the block passes the cut."""
    rng = np.random.default_rng(7)
    h = w = 120
    before = (VEG[:, None, None] * rng.uniform(0.8, 1.2, (1, h, w))).astype(np.float32)
    after = before.copy()
    after[:, :, 60:] *= np.array([0.8, 0.9, 0.7, 1.3, 1.0, 0.9], np.float32)[:, None, None]  # greener
    after[:, 30:50, 80:100] = (ROOF[:, None, None] * rng.uniform(0.8, 1.2, (1, 20, 20))).astype(np.float32)
    before += rng.normal(0, 0.004, before.shape).astype(np.float32)
    after += rng.normal(0, 0.004, before.shape).astype(np.float32)
    params = _params()
    model = fit_change_model(before, after, params)
    model = model.model_copy(update={"noise_scale": [0.006] * 6})
    cva_alone = change_evidence(before, after, model, DetectorParams(structure_radius_px=0))
    with_structure = change_evidence(before, after, model, DetectorParams())
    field = (slice(70, 110), slice(70, 110))
    block = (slice(34, 46), slice(84, 96))
    assert np.median(cva_alone[field]) > 7  # the CVA alone flags the whole greening field
    assert np.percentile(with_structure[field], 99) < model.threshold
    assert np.median(with_structure[block]) > 3 * model.threshold
    assert np.median(with_structure[10:50, 10:50]) < 0.5  # unchanged left half


def test_typing_building_greening_glint_clearing_invalid() -> None:
    before, after = _pair(seed=1)
    after[:, 10:30, 10:30] = ROOF[:, None, None]  # building on bare soil
    lomas = 0.55 * SOIL + 0.45 * VEG  # desert hills greening
    after[:, 70:100, 10:40] = lomas[:, None, None]
    after[:, 80:110, 80:110] += 0.08  # sun glint: flat brightening of the sea
    after[:, 10:30, 80:100] = SOIL[:, None, None]  # vegetation cleared to bare soil
    before[:, 50, 50] = np.nan
    after[3, 51, 51] = np.nan
    params = _params()
    model = fit_change_model(before, after, params)
    score = change_score(before, after, model, params)
    classes = change_classes(before, after, score, model, params)
    assert classes.dtype == np.uint8
    assert classes[50, 50] == NODATA and classes[51, 51] == NODATA
    assert np.isnan(score[50, 50])
    assert np.mean(classes[12:28, 12:28] == BUILT_GAIN) > 0.95
    assert np.mean(classes[72:98, 12:38] == VEGETATION_GAIN) > 0.95
    glint = classes[82:108, 82:108]
    assert not np.isin(glint, MAN_MADE_CLASSES).any()
    assert np.mean(glint == WATER_CHANGE) > 0.9
    assert np.mean(classes[12:28, 82:98] == SOIL_DISTURBANCE) > 0.95
    # stable background stays unchanged
    assert np.mean(classes[40:60, 60:] == 0) > 0.98


def test_man_made_cleanup_removes_isolated_pixels() -> None:
    before, after = _pair(seed=2)
    after[:, 5, 5] = ROOF  # single-pixel change: opened away
    after[:, 20:30, 20:30] = ROOF[:, None, None]
    params = _params()
    model = fit_change_model(before, after, params)
    classes = change_classes(before, after, change_score(before, after, model, params), model, params)
    assert classes[5, 5] == 0
    assert (classes[21:29, 21:29] == BUILT_GAIN).all()


@pytest.mark.parametrize("close_radius", [1, 2])
def test_man_made_cleanup_types_filled_pixels_as_a_whole_tile_transform_does(close_radius: int) -> None:
    """Pixels the closing adds take the nearest man-made pixel's type; the transform runs on
    blocks around them only, with the same result as on the whole tile (ties included)."""
    from scipy import ndimage

    from imagery.change import _clean_man_made

    rng = np.random.default_rng(close_radius)
    dp = DetectorParams(open_radius_px=0, close_radius_px=close_radius)
    for density in (0.05, 0.25):
        classes = np.zeros((150, 203), np.uint8)  # not a whole number of 64 px blocks
        spots = rng.random(classes.shape) < density
        classes[spots] = rng.choice(np.array([*MAN_MADE_CLASSES, VEGETATION_GAIN], np.uint8), spots.sum())
        man = np.isin(classes, MAN_MADE_CLASSES)
        cleaned = _clean_man_made(classes, dp)
        added = np.isin(cleaned, MAN_MADE_CLASSES) & ~man
        assert added.sum() > 50
        iy, ix = ndimage.distance_transform_edt(~man, return_distances=False, return_indices=True)
        expected = classes.copy()
        expected[added] = classes[iy[added], ix[added]]
        np.testing.assert_array_equal(cleaned, expected)


def test_min_mapping_unit_drops_small_man_made_patches_only() -> None:
    c = np.zeros((40, 40), np.uint8)
    c[2:5, 2:5] = BUILT_GAIN  # 9 px
    c[10:20, 10:20] = SOIL_DISTURBANCE  # 100 px
    c[30:32, 30:32] = VEGETATION_GAIN  # natural class: untouched
    c[0, 39] = NODATA
    out = apply_min_mapping_unit(c, 20)
    assert (out[2:5, 2:5] == 0).all()
    assert (out[10:20, 10:20] == SOIL_DISTURBANCE).all()
    assert (out[30:32, 30:32] == VEGETATION_GAIN).all() and out[0, 39] == NODATA


def test_tiles_with_halo_equal_whole_scene() -> None:
    before, after = _pair(seed=3, h=150, w=150)
    after[:, 20:50, 40:90] = ROOF[:, None, None]
    after[:, 90:120, 10:60] = (0.5 * SOIL + 0.5 * VEG)[:, None, None]
    params = _params()
    model = fit_change_model(before, after, params)
    score = change_score(before, after, model, params)
    classes = change_classes(before, after, score, model, params)
    tile = 64
    for y0 in range(0, 150, tile):
        for x0 in range(0, 150, tile):
            ys, xs = max(0, y0 - HALO_PX), max(0, x0 - HALO_PX)
            ye, xe = min(150, y0 + tile + HALO_PX), min(150, x0 + tile + HALO_PX)
            b, a = before[:, ys:ye, xs:xe], after[:, ys:ye, xs:xe]
            s = change_score(b, a, model, params)
            c = change_classes(b, a, s, model, params)
            iy = slice(y0 - ys, y0 - ys + min(tile, 150 - y0))
            ix = slice(x0 - xs, x0 - xs + min(tile, 150 - x0))
            oy, ox = slice(y0, y0 + tile), slice(x0, x0 + tile)
            np.testing.assert_allclose(s[iy, ix], score[oy, ox], atol=1e-5)
            np.testing.assert_array_equal(c[iy, ix], classes[oy, ox])


def test_fit_on_subsample_gives_same_model_scale() -> None:
    before, after = _pair(seed=5)
    after[:, 10:40, 10:40] = ROOF[:, None, None]
    params = _params()
    full = fit_change_model(before, after, params)
    sub = fit_change_model(before.reshape(6, -1)[:, ::4], after.reshape(6, -1)[:, ::4], params)
    np.testing.assert_allclose(sub.noise_scale, full.noise_scale, rtol=0.1)


def test_params_must_fit_in_halo() -> None:
    with pytest.raises(ValueError):
        DetectorParams(shift_radius_px=2, smooth_sigma_px=2.0, open_radius_px=3, close_radius_px=3)
    with pytest.raises(ValueError):
        DetectorParams(structure_radius_px=7, open_radius_px=1, close_radius_px=1)
    DetectorParams(structure_radius_px=6, open_radius_px=1, close_radius_px=1)  # reach 8 fits


def test_kittler_cut_only_for_the_cva_alone() -> None:
    with pytest.raises(ValueError, match="structure_radius_px"):
        DetectorParams(threshold_method="kittler")
    assert DetectorParams(threshold_method="kittler", structure_radius_px=0).structure_radius_px == 0


def test_local_structure_change_equals_scipy_window_means() -> None:
    """The fused kernel gives what the formula gives with scipy's uniform_filter (float64)."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    before = rng.normal(0.1, 0.05, (6, 70, 90)).astype(np.float32)
    after = (1.3 * before + rng.normal(0, 0.01, before.shape)).astype(np.float32)
    before[:, 5:15, 20:30] = np.nan
    after[4, 40, 60] = np.nan
    inv_scale = (1 / rng.uniform(0.002, 0.02, 6)).astype(np.float32)
    valid = np.isfinite(before).all(axis=0) & np.isfinite(after).all(axis=0)
    count = ndimage.uniform_filter(valid.astype(np.float64), 9, mode="constant")
    inv_count = np.where(valid, 1.0 / np.maximum(count, 1e-12), 0.0)

    def mean(v: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(v, 9, mode="constant") * inv_count

    total = np.zeros(valid.shape)
    for k in range(6):
        x = np.where(valid, before[k].astype(np.float64) * float(inv_scale[k]), 0.0)
        y = np.where(valid, after[k].astype(np.float64) * float(inv_scale[k]), 0.0)
        mx, my = mean(x), mean(y)
        vx, vy = np.maximum(mean(x * x) - mx * mx, 0), np.maximum(mean(y * y) - my * my, 0)
        total += (2 * (mean(x * y) - mx * my) + 1.0) / (vx + vy + 1.0)
    expected = np.where(valid, (1.0 - total / 6).astype(np.float32), np.float32(np.nan))
    got = local_structure_change(before, after, inv_scale, 4, 1.0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert np.array_equal(np.isnan(got), ~valid)


def _plain_shift_tolerant_distance(b: np.ndarray, a: np.ndarray, inv_s: np.ndarray, r: int) -> np.ndarray:
    """The shift-tolerant distance by its definition: both minima over every offset, NaN skipped."""
    _, h, w = b.shape
    s = inv_s[:, None, None]
    a_pad, b_pad = (np.pad(x, ((0, 0), (r, r), (r, r)), constant_values=np.nan) for x in (a, b))
    best_ab = np.full((h, w), np.inf, np.float32)
    best_ba = np.full((h, w), np.inf, np.float32)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            window = (slice(None), slice(r + dy, r + dy + h), slice(r + dx, r + dx + w))
            d_ab = np.sum(((a_pad[window] - b) * s) ** 2, axis=0)
            d_ba = np.sum(((a - b_pad[window]) * s) ** 2, axis=0)
            best_ab = np.where(d_ab < best_ab, d_ab, best_ab)
            best_ba = np.where(d_ba < best_ba, d_ba, best_ba)
    valid = np.isfinite(a).all(axis=0) & np.isfinite(b).all(axis=0)
    return np.where(valid, np.sqrt(np.maximum(best_ab, best_ba)), np.nan).astype(np.float32)


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_shift_tolerant_distance_equals_plain_minimum(radius: int) -> None:
    """The row-vectorised kernel (each distance computed once for both directions) gives the
    definition's value, NaN exactly on pixels with an invalid band, at the edges too."""
    from imagery.change import _shift_tolerant_distance

    rng = np.random.default_rng(4)
    before = rng.normal(0.1, 0.05, (6, 37, 53)).astype(np.float32)
    after = np.roll(before, 1, axis=2) + rng.normal(0, 0.01, before.shape).astype(np.float32)
    before[rng.random(before.shape) < 0.01] = np.nan
    after[:, 10:14, 20:31] = np.nan
    inv_s = (1 / rng.uniform(0.002, 0.02, 6)).astype(np.float32)
    got = _shift_tolerant_distance(before, after, inv_s, radius)
    expected = _plain_shift_tolerant_distance(before, after, inv_s, radius)
    assert np.array_equal(np.isnan(got), np.isnan(expected)) and np.isnan(got).sum() > 100
    np.testing.assert_allclose(got, expected, rtol=1e-5)
