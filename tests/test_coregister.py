"""Co-registration: known shifts recovered, unreliable windows rejected, seamless resampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.fft

from imagery.config import CoregParams
from imagery.coregister import (
    KnotGrid,
    Passband,
    ShiftModel,
    WindowGrid,
    _cross_power,
    _freq_weight,
    _hann,
    _prepare,
    _subpixel_peak,
    apply_shift,
    estimate_shift,
    match_windows,
)

SMALL = CoregParams(window_px=128, grid_step_px=64)


def texture(size: int = 512, seed: int = 0) -> np.ndarray:
    """Seeded 1/f texture (float32, ~1000 DN spread around 2000), like a land scene's NIR band."""
    rng = np.random.default_rng(seed)
    u = scipy.fft.fftfreq(size)[:, None]
    v = scipy.fft.rfftfreq(size)[None, :]
    amp = 1.0 / (np.hypot(u, v) + 2.0 / size)
    spec = amp * np.exp(1j * rng.uniform(0, 2 * np.pi, amp.shape))
    img = scipy.fft.irfft2(spec, s=(size, size))
    return (2000 + 1000 * img / img.std()).astype(np.float32)


def fshift(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Fourier shift: the feature at (r, c) moves to (r + dy, c + dx)."""
    spec = scipy.fft.rfft2(img.astype(np.float64))
    u = scipy.fft.fftfreq(img.shape[0])[:, None]
    v = scipy.fft.rfftfreq(img.shape[1])[None, :]
    spec *= np.exp(-2j * np.pi * (u * dy + v * dx))
    return scipy.fft.irfft2(spec, s=img.shape).astype(np.float32)


def noisy(img: np.ndarray, seed: int, sigma: float = 10.0) -> np.ndarray:
    """Add independent sensor noise (a second date never repeats the first one's noise)."""
    rng = np.random.default_rng(seed)
    return (img + sigma * rng.standard_normal(img.shape)).astype(np.float32)


def blobs(shape: tuple[int, int], cover: float, seed: int) -> np.ndarray:
    """Boolean cloud mask of smooth random blobs covering about `cover` of the image."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal(shape), 12)
    return field > np.quantile(field, 1 - cover)


@pytest.mark.parametrize(("dx", "dy"), [(0.1, 0.1), (2.3, -0.7), (-1.55, 2.95), (0.5, -0.5)])
def test_known_shift_recovered_on_texture(dx: float, dy: float) -> None:
    ref = texture()
    model = estimate_shift(noisy(ref, 1), noisy(fshift(ref, dx, dy), 2), SMALL)
    assert model.method in ("global", "local-affine")
    assert abs(model.dx_px - dx) < 0.02
    assert abs(model.dy_px - dy) < 0.02
    assert model.n_tie_points >= SMALL.min_tie_points
    assert model.rmse_px < 0.05


def test_sign_convention_feature_moves_east_and_apply_undoes_it() -> None:
    ref = texture(seed=3)
    tgt = fshift(ref, 2.3, 0.0)  # a feature at column x in ref appears at x + 2.3 in target
    model = estimate_shift(ref, tgt, SMALL)
    assert model.dx_px == pytest.approx(2.3, abs=0.02)
    assert model.dy_px == pytest.approx(0.0, abs=0.02)
    back = apply_shift(tgt, model)
    inner = (slice(16, -16), slice(16, -16))
    before = np.abs(tgt - ref)[inner].mean()
    after = np.nanmean(np.abs(back - ref)[inner])
    assert after < 0.2 * before  # cubic interpolation error on a 1/f texture is ~13 %
    # Deliberately wrong sign makes it worse, not better.
    wrong = apply_shift(tgt, model.model_copy(update={"dx_px": -model.dx_px}))
    assert np.nanmean(np.abs(wrong - ref)[inner]) > before


def test_clouds_and_nodata_do_not_bias_the_shift() -> None:
    ref = texture(768, seed=4)
    tgt = noisy(fshift(ref, -1.3, 0.8), 5)
    tgt[blobs(tgt.shape, 0.3, seed=6)] = np.nan
    ref_c = noisy(ref, 7)
    ref_c[blobs(ref.shape, 0.15, seed=8)] = np.nan
    model = estimate_shift(ref_c, tgt, SMALL)
    assert abs(model.dx_px + 1.3) < 0.03
    assert abs(model.dy_px - 0.8) < 0.03
    assert model.n_rejected > 0  # cloudy windows were skipped, not matched


def test_windows_matched_on_the_part_they_need_equal_the_whole_image() -> None:
    """A caller reads only `WindowGrid.extent` of an image: the same tie points as on all of it."""
    ref = texture(600, seed=3)
    tgt = noisy(fshift(ref, 0.7, -1.2), 4)
    grid = WindowGrid.on(ref.shape, SMALL)
    top, bottom, left, right = grid.extent(0, ref.shape) or (0, 0, 0, 0)
    assert (top, left) > (0, 0) and (bottom, right) < ref.shape, "the windows leave a border unread"
    whole = match_windows(ref, tgt, SMALL, origin=(40, 50))
    part = match_windows(
        ref[top:bottom, left:right], tgt[top:bottom, left:right], SMALL, origin=(40 + top, 50 + left),
        grid=grid.moved(top, left),
    )  # fmt: skip
    assert whole.reliable.sum() >= 16
    for name in ("rows", "cols", "dx", "dy", "peak", "psr", "reliable"):
        np.testing.assert_array_equal(getattr(part, name), getattr(whole, name))


def test_subpixel_peak_over_the_passband_equals_the_whole_spectrum() -> None:
    """The sub-pixel DFT skips the frequencies the low-pass zeroes: bit-identical peaks."""
    n = 64
    weight = _freq_weight(n, 0.35)
    band = Passband.of(weight)
    assert len(band.rows) < n and band.cols < n // 2 + 1
    rng = np.random.default_rng(5)
    spec = scipy.fft.rfft2(rng.standard_normal((3, n, n)).astype(np.float32)).astype(np.complex64)
    cp = (spec / np.abs(spec) * weight).astype(np.complex64)
    whole = Passband(n, np.arange(n), n // 2 + 1)
    centre = np.array([0.3, -1.2, 2.0])
    got = _subpixel_peak(band.take(cp), band, centre, -centre, half=0.6, m=9, norm=100.0)
    want = _subpixel_peak(cp, whole, centre, -centre, half=0.6, m=9, norm=100.0)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_cross_power_matches_float64_reference() -> None:
    """The fused whitening kernel is the whitened, low-passed cross-power to float32 rounding:
    textured and shifted windows, one all zero (an all-invalid window) and one of tiny values (eps
    floor). Compared with float64, not bit for bit with numpy's complex64 loops: those round
    differently with and without FMA/AVX-512 (the kernel reproduces this machine's; see _whiten)."""
    n = 64
    taper, weight, _, _ = _filters_for_test(n)
    rng = np.random.default_rng(11)
    ref = np.stack([texture(n, seed=s) for s in range(5)])
    tgt = np.stack([noisy(fshift(r, 0.4 * k, -0.3 * k), 20 + k) for k, r in enumerate(ref)])
    ref_w, _ = _prepare(ref, taper)
    tgt_w, _ = _prepare(tgt, taper)
    tgt_w[2] = 0
    tgt_w[3] = rng.standard_normal((n, n)).astype(np.float32) * np.float32(1e-20)
    ref_f = scipy.fft.rfft2(ref_w)
    want = np.conj(ref_f.astype(np.complex128)) * scipy.fft.rfft2(tgt_w).astype(np.complex128)
    mag = np.abs(want)
    want /= np.maximum(mag, np.maximum(1e-12 * mag.max(axis=(1, 2), keepdims=True), 1e-30))
    want *= weight
    got = _cross_power(ref_f, tgt_w, weight)
    assert got.dtype == np.complex64
    assert not got[2].any() and np.abs(got[3]).max() > 0.5  # all-invalid: zero; tiny values: whitened
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def _filters_for_test(n: int) -> tuple[np.ndarray, np.ndarray, Passband, float]:
    from imagery.coregister import _filters

    return _filters(n, 0.35)


def test_prepare_equals_the_masked_formula() -> None:
    """Windows de-meaned over their valid pixels, invalid ones zero, tapered: the plain numpy
    formula bit for bit, with and without NaN in the batch."""
    rng = np.random.default_rng(8)
    taper = _hann(32)
    for nan_share in (0.0, 0.2):
        stack = rng.normal(2000, 300, (4, 32, 32)).astype(np.float32)
        stack[rng.random(stack.shape) < nan_share] = np.nan
        stack[3] = np.nan  # a window without a valid pixel
        valid = np.isfinite(stack)
        count = valid.sum(axis=(1, 2), dtype=np.float32)
        filled = np.where(valid, stack, np.float32(0))
        want = filled - (filled.sum(axis=(1, 2), dtype=np.float32) / np.maximum(count, 1))[:, None, None]
        want[~valid] = 0
        want *= taper
        got, frac = _prepare(stack.copy(), taper)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(frac, count / np.float32(32 * 32))


def test_windows_near_nodata_and_outside_overlap() -> None:
    ref = texture(768, seed=9)
    tgt = noisy(fshift(ref, 0.6, 1.4), 10)
    tgt[:, :300] = np.nan  # target does not cover the western part of the grid
    rr, cc = np.ogrid[:768, :768]
    tgt[rr + cc > 1200] = np.nan  # diagonal no-data edge, like a swath border
    tp = match_windows(ref, tgt, SMALL)
    model = estimate_shift(ref, tgt, SMALL)
    assert abs(model.dx_px - 0.6) < 0.03 and abs(model.dy_px - 1.4) < 0.03
    assert not tp.reliable[tp.cols < 300 - 64].any()  # windows in the empty part never kept
    assert model.n_tie_points < model.n_windows
    out = apply_shift(tgt, model)
    assert np.isnan(out[:, :290]).all()  # nothing invented where the target had no data


def test_target_all_nan_gives_none() -> None:
    ref = texture(seed=11)
    model = estimate_shift(ref, np.full_like(ref, np.nan), SMALL)
    assert model.method == "none"
    assert (model.dx_px, model.dy_px) == (0.0, 0.0)
    assert model.n_tie_points == 0


def test_textureless_ocean_never_gives_a_wild_shift() -> None:
    rng = np.random.default_rng(12)
    ref = (500 + 5 * rng.standard_normal((512, 512))).astype(np.float32)
    tgt = (500 + 5 * rng.standard_normal((512, 512))).astype(np.float32)
    model = estimate_shift(ref, tgt, SMALL)
    assert model.method == "none"  # no window and no global match is reliable on pure noise
    assert (model.dx_px, model.dy_px) == (0.0, 0.0)
    assert model.n_tie_points == 0


def test_coast_ocean_windows_rejected_land_windows_kept() -> None:
    ref = texture(768, seed=13)
    rng = np.random.default_rng(14)
    sea = (slice(None), slice(0, 384))
    ref[sea] = 300 + 3 * rng.standard_normal((768, 384))
    tgt = noisy(fshift(ref, 1.7, -0.4), 15)
    tgt[sea] = 300 + 3 * rng.standard_normal((768, 384))  # the sea never repeats itself
    tp = match_windows(ref, tgt, SMALL)
    assert not tp.reliable[tp.cols < 384 - 64].any()
    assert tp.reliable[tp.cols > 384 + 64].all()
    model = estimate_shift(ref, tgt, SMALL)
    assert abs(model.dx_px - 1.7) < 0.03 and abs(model.dy_px + 0.4) < 0.03


def test_outlier_tie_points_rejected() -> None:
    ref = texture(768, seed=16)
    tgt = noisy(fshift(ref, 0.9, 0.3), 17)
    patch = tgt[100:300, 100:300].copy()
    tgt[100:300, 100:300] = np.roll(patch, (3, -3), axis=(0, 1))  # a locally wrong region
    model = estimate_shift(noisy(ref, 18), tgt, SMALL)
    assert abs(model.dx_px - 0.9) < 0.05 and abs(model.dy_px - 0.3) < 0.05
    assert model.n_rejected >= 1


def test_affine_field_recovered() -> None:
    size = 1024
    ref = texture(size, seed=19)
    truth = ShiftModel(
        dx_px=1.0,
        dy_px=-0.5,
        method="local-affine",
        centre=(511.5, 511.5),
        gradient=(0.0, 2e-3, -1.5e-3, 0.0),  # ~2 px of change in dx across the image
        extent=(0.0, size - 1.0, 0.0, size - 1.0),
    )
    # target(p + s(p)) = ref(p)  <=>  target(q) ~= ref(q - s(q)) for a slowly varying s.
    neg = truth.model_copy(update={"dx_px": -1.0, "dy_px": 0.5, "gradient": (0.0, -2e-3, 1.5e-3, 0.0)})
    tgt = apply_shift(ref, neg)
    model = estimate_shift(ref, tgt, SMALL)
    assert model.method == "local-affine"
    rows, cols = np.mgrid[100:900:50, 100:900:50]
    got = model.shift_at(rows, cols)
    want = truth.shift_at(rows, cols)
    assert np.abs(got[0] - want[0]).max() < 0.05
    assert np.abs(got[1] - want[1]).max() < 0.05


def test_apply_shift_is_seamless_across_adjacent_windows() -> None:
    img = np.stack([texture(400, seed=s) for s in (20, 21)])  # (2, 400, 400)
    img[:, 150:170, 200:230] = np.nan
    model = ShiftModel(
        dx_px=1.37,
        dy_px=-2.61,
        method="local-affine",
        centre=(1200.0, 800.0),
        gradient=(1e-3, -2e-3, 5e-4, 1e-3),
        extent=(1000.0, 1400.0, 600.0, 1000.0),
    )
    origin = (1000, 600)
    union = apply_shift(img, model, origin=origin)
    halo = 8  # > max shift + kernel reach
    left = apply_shift(img[:, :, : 200 + halo], model, origin=origin)
    right = apply_shift(img[:, :, 200 - halo :], model, origin=(origin[0], origin[1] + 200 - halo))
    stitched = np.concatenate([left[:, :, :200], right[:, :, halo:]], axis=2)
    inner = (slice(None), slice(halo, -halo), slice(halo, -halo))
    np.testing.assert_array_equal(stitched[inner], union[inner])
    top = apply_shift(img[:, : 200 + halo], model, origin=origin)
    bottom = apply_shift(img[:, 200 - halo :], model, origin=(origin[0] + 200 - halo, origin[1]))
    stitched = np.concatenate([top[:, :200], bottom[:, halo:]], axis=1)
    np.testing.assert_array_equal(stitched[inner], union[inner])
    assert np.isnan(union).sum() > 0 and np.isfinite(union[inner]).mean() > 0.9


def test_zero_shift_is_identity_and_keeps_nan() -> None:
    img = texture(128, seed=22)
    img[10:20, 10:20] = np.nan
    for order in (1, 3):
        out = apply_shift(img, ShiftModel(), order=order)
        np.testing.assert_array_equal(out, img)


def test_model_json_round_trip_and_shift_at_clamps() -> None:
    model = ShiftModel(
        dx_px=0.5,
        dy_px=0.25,
        n_tie_points=10,
        method="local-affine",
        centre=(100.0, 100.0),
        gradient=(0.01, 0.0, 0.0, 0.0),
        extent=(50.0, 150.0, 50.0, 150.0),
    )
    again = ShiftModel.model_validate_json(model.model_dump_json())
    assert again == model
    dx, _ = again.shift_at(np.array([0.0, 100.0, 10_000.0]), np.array([100.0, 100.0, 100.0]))
    np.testing.assert_allclose(dx, [0.0, 0.5, 1.0])  # clipped at the tie-point extent


def test_disabled_returns_zero_shift() -> None:
    ref = texture(256, seed=23)
    model = estimate_shift(ref, fshift(ref, 1.0, 1.0), CoregParams(enabled=False))
    assert model.method == "none" and model.dx_px == 0.0


def test_too_few_tie_points_falls_back_to_global_window() -> None:
    ref = texture(300, seed=24)
    tgt = noisy(fshift(ref, -0.8, 1.2), 25)
    model = estimate_shift(ref, tgt, CoregParams(window_px=256, grid_step_px=200))
    assert model.method == "global"
    assert abs(model.dx_px + 0.8) < 0.03 and abs(model.dy_px - 1.2) < 0.03


@pytest.mark.parametrize(("dx", "dy"), [(0.3, 2.7), (-1.9, -0.15)])
def test_known_shift_on_real_oscd_band(oscd: Path, dx: float, dy: float) -> None:
    import rasterio

    path = sorted((oscd / "nantes" / "before").glob("*_B08.tif"))[0]
    with rasterio.open(path) as src:
        ref = src.read(1).astype(np.float32)
    tgt = fshift(ref, dx, dy)
    tgt[blobs(tgt.shape, 0.2, seed=26)] = np.nan
    model = estimate_shift(ref, tgt, SMALL)
    assert abs(model.dx_px - dx) < 0.05 and abs(model.dy_px - dy) < 0.05
    assert model.n_rejected > 0


@pytest.mark.parametrize("order", [1, 3])
def test_apply_shift_follows_shift_at_on_linear_ramps(order: int) -> None:
    model = ShiftModel(
        dx_px=0.7,
        dy_px=-1.2,
        method="local-affine",
        centre=(550.0, 350.0),
        gradient=(2e-3, -1e-3, -1.5e-3, 3e-3),
        extent=(520.0, 580.0, 300.0, 420.0),
    )
    origin = (500, 300)
    rows, cols = np.mgrid[500:600, 300:420].astype(np.float32)
    out = apply_shift(np.stack([cols, rows]), model, origin=origin, order=order)
    dx, dy = model.shift_at(rows, cols)
    inner = (slice(4, -4), slice(4, -4))
    np.testing.assert_allclose(out[0][inner], (cols + dx)[inner], atol=2e-3)
    np.testing.assert_allclose(out[1][inner], (rows + dy)[inner], atol=2e-3)


def _plain_shift(
    img: np.ndarray, model: ShiftModel, origin: tuple[int, int], knots: KnotGrid, order: int
) -> np.ndarray:
    """`apply_shift` by its definition, all pixels at once in float64: weights of the sample
    position's taps (Keys cubic or bilinear); NaN where a tap of nonzero weight is NaN or outside."""
    _, h, w = img.shape
    rows, cols = np.mgrid[origin[0] : origin[0] + h, origin[1] : origin[1] + w].astype(np.float64)
    gx, gy = model.shift_at(rows, cols)
    kx, ky = knots.at(rows, cols)
    taps = []
    for s, o, n in ((rows + gy + ky, origin[0], h), (cols + gx + kx, origin[1], w)):
        i0 = np.floor(s)
        offsets = np.arange(-1, 3) if order == 3 else np.arange(0, 2)
        x = np.abs(s - i0 - offsets[:, None, None])
        if order == 3:
            weights = np.where(
                x <= 1, (1.5 * x - 2.5) * x * x + 1, np.where(x < 2, (((x - 5) * x + 8) * x - 4) * -0.5, 0)
            )
        else:
            weights = 1 - x
        taps.append(((i0 + offsets[:, None, None] - o).astype(np.int64), weights, n))
    (iy, wy, ny), (ix, wx, nx) = taps
    out = np.zeros(img.shape)
    for a in range(len(iy)):
        for b in range(len(ix)):
            weight = wy[a] * wx[b]
            inside = (iy[a] >= 0) & (iy[a] < ny) & (ix[b] >= 0) & (ix[b] < nx)
            value = img[:, np.clip(iy[a], 0, ny - 1), np.clip(ix[b], 0, nx - 1)]
            out += np.where(weight != 0, np.where(inside, value, np.nan) * weight, 0)
    return out


def affine_shift_and_knots() -> tuple[ShiftModel, KnotGrid]:
    """A local-affine shift and a knot grid of per-tile corrections, for windows at (500, 300)."""
    affine = ShiftModel(
        dx_px=0.4, dy_px=-1.3, method="local-affine", centre=(540.0, 360.0),
        gradient=(4e-3, -3e-3, 2e-3, 5e-3), extent=(510.0, 570.0, 320.0, 400.0),
    )  # fmt: skip
    knots = KnotGrid(
        np.array([520.0, 560.0]), np.array([310.0, 350.0, 390.0]),
        np.array([[0.0, 0.6, -0.3], [0.2, 0.0, 0.9]]), np.array([[0.5, 0.0, 0.0], [-0.7, 0.1, 0.0]]),
    )  # fmt: skip
    return affine, knots


@pytest.mark.parametrize("order", [1, 3])
def test_apply_shift_equals_plain_resampling(order: int) -> None:
    """The row-vectorised resampler gives the definition's values, with knots, an affine model,
    NaN holes, integer positions (zero-weight taps) and the window's edges."""
    rng = np.random.default_rng(30)
    img = rng.normal(1000, 100, (3, 90, 110)).astype(np.float32)
    img[:, 40:44, 50:57] = np.nan
    img[1, 10, 70] = np.nan
    affine, knots = affine_shift_and_knots()
    integer = ShiftModel(dx_px=1.0, dy_px=-2.0, method="global")
    origin = (500, 300)
    for model, grid in (
        (affine, knots),
        (affine, KnotGrid(*(np.zeros(s) for s in (1, 1, (1, 1), (1, 1))))),
        (integer, knots),
    ):
        got = apply_shift(img, model, origin=origin, order=order, knots=grid)  # type: ignore[arg-type]
        want = _plain_shift(img, model, origin, grid, order)
        assert np.array_equal(np.isnan(got), np.isnan(want)) and np.isnan(got).any()
        np.testing.assert_allclose(got, want, rtol=1e-5)
    exact = apply_shift(img, integer, origin=origin, order=order)  # type: ignore[arg-type]
    np.testing.assert_array_equal(exact[:, 2:, :-1], img[:, :-2, 1:])
