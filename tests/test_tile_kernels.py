"""The per-tile compiled passes against the numpy/scipy formulations they replace, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from imagery.change import (
    BUILT_GAIN,
    BUILT_LOSS,
    MAN_MADE_CLASSES,
    NODATA,
    SOIL_DISTURBANCE,
    VEGETATION_GAIN,
    VEGETATION_LOSS,
    WATER_CHANGE,
    ChangeModel,
    DetectorParams,
    _clean_man_made,
    _nan_gaussian,
    _shift_tolerant_distance,
    change_classes,
    change_evidence,
    change_score,
    local_structure_change,
)
from imagery.config import ChangeParams
from imagery.coregister import ShiftModel, apply_shift
from imagery.morphology import disk
from imagery.normalize import Normalization, apply_normalization
from tests.test_coregister import affine_shift_and_knots

_B, _G, _R, _N, _S1, _S2 = range(6)


def _scipy_nan_gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """The NaN-aware Gaussian as two scipy Gaussians (values with NaN as 0, the valid mask)."""
    valid = np.isfinite(x)
    filled = np.where(valid, x, 0).astype(np.float32)
    num = ndimage.gaussian_filter(filled, sigma, mode="nearest", truncate=3.0)
    den = ndimage.gaussian_filter(valid.astype(np.float32), sigma, mode="nearest", truncate=3.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~valid] = np.nan
    return out.astype(np.float32, copy=False)


@pytest.mark.parametrize("shape", [(97, 131), (5, 3), (1, 12), (9, 1)])
@pytest.mark.parametrize("sigma", [0.3, 1.0, 1.7, 2.0])
def test_nan_gaussian_equals_scipy(shape: tuple[int, int], sigma: float) -> None:
    """Same float32 values as scipy's two filters and their quotient, NaN where the input is
    not finite, also on windows smaller than the kernel."""
    rng = np.random.default_rng(7)
    x = rng.gamma(2.0, 2.0, shape).astype(np.float32)
    x[rng.random(shape) < 0.08] = np.nan
    x[rng.random(shape) < 0.02] = np.inf
    x[0, 0] = np.nan
    got = _nan_gaussian(x, sigma)
    assert got.dtype == np.float32 and np.isnan(got).any()
    assert np.array_equal(got, _scipy_nan_gaussian(x, sigma), equal_nan=True)


def _model(rng: np.random.Generator, threshold: float) -> ChangeModel:
    return ChangeModel(
        noise_scale=rng.uniform(0.005, 0.02, 6).tolist(), irmad_mean=[0.0] * 12,
        irmad_a=np.eye(6).tolist(), irmad_b=np.eye(6).tolist(), irmad_var=[1.0] * 6,
        irmad_rho=[0.5] * 6, threshold=threshold, threshold_method="fixed", n_pixels=1000,
        sample_change_fraction=0.1,
    )  # fmt: skip


def _quantised_pair(rng: np.random.Generator, h: int = 96, w: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """Reflectances on a 1/64 grid (so index values tie with their cuts), constant on 4 x 4 px
    blocks (patches that outlast the man-made opening) but for a few pixels, with holes of NaN."""

    def blocks() -> np.ndarray:
        values = (rng.integers(0, 40, (6, h // 4, w // 4)) / 64).astype(np.float32)
        return np.repeat(np.repeat(values, 4, axis=1), 4, axis=2)

    before, after = blocks(), blocks()
    same = np.repeat(np.repeat(rng.random((h // 4, w // 4)) < 0.6, 4, axis=0), 4, axis=1)
    after[:, same] = before[:, same]
    speckle = rng.random((h, w)) < 0.05
    after[:, speckle] = (rng.integers(0, 40, (6, int(speckle.sum()))) / 64).astype(np.float32)
    before[rng.random(before.shape) < 0.004] = np.nan
    after[:, 30:33, 40:47] = np.nan
    return before, after


def test_change_evidence_and_score_equal_the_numpy_formulas() -> None:
    """Evidence = scipy Gaussian of the shift-tolerant distance times max(structure factor, 0);
    score = 1 / (1 + exp(-(e - T) / softness)) in float32, bit for bit."""
    rng = np.random.default_rng(11)
    before, after = _quantised_pair(rng)
    model = _model(rng, 3.5)
    dp = DetectorParams(softness=0.7)
    inv_s = (1.0 / np.asarray(model.noise_scale, np.float32)).astype(np.float32)
    e = _scipy_nan_gaussian(_shift_tolerant_distance(before, after, inv_s, dp.shift_radius_px), 1.0)
    factor = local_structure_change(before, after, inv_s, dp.structure_radius_px, dp.structure_c)
    expected_e = (e * np.maximum(factor, 0)).astype(np.float32)
    z = (expected_e - np.float32(model.threshold)) / np.float32(dp.softness)
    with np.errstate(over="ignore"):
        expected_score = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    assert np.array_equal(change_evidence(before, after, model, dp), expected_e, equal_nan=True)
    score = change_score(before, after, model, dp)
    assert score.dtype == np.float32 and np.isnan(score).any() and (score > 0.5).mean() > 0.05
    assert np.array_equal(score, expected_score, equal_nan=True)


def _numpy_change_classes(
    before: np.ndarray, after: np.ndarray, score: np.ndarray, dp: DetectorParams, thr: float
) -> np.ndarray:
    """The typing as numpy expressions on the changed pixels (before the compiled pass), cleaned."""

    def nd(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return ((x - y) / np.maximum(x + y, 1e-4)).astype(np.float32)

    valid = np.isfinite(score) & np.all(np.isfinite(before), axis=0) & np.all(np.isfinite(after), axis=0)
    where = np.flatnonzero(valid & (np.nan_to_num(score, nan=0.0) > thr))
    b, a = before.reshape(6, -1)[:, where], after.reshape(6, -1)[:, where]
    veg_b, veg_a = nd(b[_N], b[_R]) > dp.ndvi_vegetation, nd(a[_N], a[_R]) > dp.ndvi_vegetation
    wat_b = (nd(b[_G], b[_S1]) > dp.mndwi_water) & (b[_N] < dp.water_nir_max) & ~veg_b
    wat_a = (nd(a[_G], a[_S1]) > dp.mndwi_water) & (a[_N] < dp.water_nir_max) & ~veg_a
    dndvi = nd(a[_N], a[_R]) - nd(b[_N], b[_R])
    dsoil = nd(a[_S1], a[_B]) - nd(b[_S1], b[_B])
    land_a = ~wat_a & ~veg_a & (nd(a[_S1], a[_N]) > dp.ndbi_built)
    water = (wat_b & ~land_a) | (~wat_b & wat_a)
    veg_gain = ~water & veg_a & (dndvi > dp.veg_gain_dndvi)
    veg_loss = ~water & ~veg_gain & veg_b & veg_a
    man = ~(water | veg_gain | veg_loss)
    soil = man & veg_b & ~veg_a
    gain = man & ~soil & (wat_b | (dsoil < 0))
    typed = np.zeros(where.size, np.uint8)
    for mask, value in (
        (soil, SOIL_DISTURBANCE), (gain, BUILT_GAIN), (man & ~soil & ~gain, BUILT_LOSS),
        (water, WATER_CHANGE), (veg_gain, VEGETATION_GAIN), (veg_loss, VEGETATION_LOSS),
    ):  # fmt: skip
        typed[mask] = value
    out = np.zeros(score.shape, np.uint8)
    out.reshape(-1)[where] = typed
    out = _scipy_clean_man_made(out, dp)
    out[~valid] = NODATA
    return out


def _scipy_clean_man_made(classes: np.ndarray, dp: DetectorParams) -> np.ndarray:
    """Opening and closing of the man-made mask with scipy; added pixels take the class of the
    nearest man-made pixel by the whole window's Euclidean feature transform."""
    man = np.isin(classes, MAN_MADE_CLASSES)
    cleaned = man
    if dp.open_radius_px:
        square = disk(dp.open_radius_px, dp.open_radius_px)
        cleaned = ndimage.binary_dilation(ndimage.binary_erosion(cleaned, square, border_value=1), square)
    if dp.close_radius_px:
        square = disk(dp.close_radius_px, dp.close_radius_px)
        cleaned = ndimage.binary_erosion(ndimage.binary_dilation(cleaned, square), square, border_value=1)
    out = classes.copy()
    out[man & ~cleaned] = 0
    added = cleaned & ~man
    if added.any():
        near = ndimage.distance_transform_edt(~man, return_distances=False, return_indices=True)
        out[added] = classes[near[0], near[1]][added]
    return out


@pytest.mark.parametrize(
    "cuts",
    [
        {},
        {"open_radius_px": 0, "close_radius_px": 2},
        {"open_radius_px": 2, "close_radius_px": 0},
        {"open_radius_px": 0, "close_radius_px": 0},
        {"ndvi_vegetation": 0.2, "mndwi_water": 0.2, "veg_gain_dndvi": 0.2, "water_nir_max": 0.3},
        {"ndvi_vegetation": 0.0, "mndwi_water": 0.0, "ndbi_built": 0.2, "veg_gain_dndvi": 0.0},
    ],
)
def test_change_classes_equal_the_numpy_typing(cuts: dict[str, float]) -> None:
    """Every class, no data and the man-made clean-up as the numpy formulation gives them, with
    cuts and a score threshold that are not float32 numbers (compared in float32, as numpy does)
    and index values that tie with the cuts."""
    rng = np.random.default_rng(5)
    before, after = _quantised_pair(rng)
    score = rng.random(before.shape[1:]).astype(np.float32)
    score[rng.random(score.shape) < 0.1] = np.float32(0.3)  # ties with the threshold below
    score[5:9, 5:70] = np.nan
    dp = DetectorParams(**cuts)
    params = ChangeParams(score_threshold=0.3, model=dp.model_dump())
    got = change_classes(before, after, score, _model(rng, 3.5), params)
    expected = _numpy_change_classes(before, after, score, dp, 0.3)
    assert np.array_equal(got, expected)
    counts = np.bincount(got.ravel(), minlength=256)
    assert counts[NODATA] > 0 and (counts[1:7] > 0).sum() >= 4


@pytest.mark.parametrize("order", [1, 3])
def test_shift_with_gain_and_offset_equals_shift_then_normalisation(order: int) -> None:
    """The resampler's per-band gain and offset give `apply_normalization` of its plain result,
    bit for bit (NaN where the sample leaves the window or touches a NaN)."""
    rng = np.random.default_rng(12)
    img = rng.normal(0.2, 0.05, (6, 70, 90)).astype(np.float32)
    img[:, 20:24, 30:37] = np.nan
    img[2, 50, 60] = np.nan
    norm = Normalization(
        gain=rng.uniform(0.8, 1.2, 6).tolist(), offset=rng.normal(0, 0.01, 6).tolist(), n_pixels=1,
        n_no_change=1, iterations=1, converged=True, canonical_correlations=[0.9] * 6,
        band_correlations=[0.9] * 6,
    )  # fmt: skip
    model, knots = affine_shift_and_knots()
    for shift in (model, ShiftModel(dx_px=1.0, dy_px=-2.0, method="global")):
        kw = {"origin": (500, 300), "order": order, "knots": knots}
        got = apply_shift(img, shift, gain=norm.gain, offset=norm.offset, **kw)  # type: ignore[arg-type]
        want = apply_normalization(apply_shift(img, shift, **kw), norm)  # type: ignore[arg-type]
        assert np.isnan(got).any() and np.array_equal(got, want, equal_nan=True)
    with pytest.raises(ValueError, match="one each per band"):
        apply_shift(img, model, gain=norm.gain[:5], offset=norm.offset[:5])


def test_man_made_closing_leaves_no_data_alone() -> None:
    """The closing fills a gap in a man-made patch with the nearest type, but not a no-data pixel."""
    classes = np.zeros((20, 20), np.uint8)
    classes[5:15, 5:15] = BUILT_GAIN
    classes[8, 8] = 0
    classes[11, 11] = NODATA
    out = _clean_man_made(classes, DetectorParams(open_radius_px=0, close_radius_px=1))
    assert out[8, 8] == BUILT_GAIN and out[11, 11] == NODATA
