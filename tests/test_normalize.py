"""Radiometric normalisation: IR-MAD no-change weights + orthogonal regression."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from imagery.change import fit_change_model
from imagery.config import ChangeParams
from imagery.normalize import (
    NoChangeFit,
    Normalization,
    _mad_chi2,
    _mads,
    _row_medians,
    _weighted_moments,
    apply_normalization,
    chi2_sf,
    chi2_sf_even,
    fit_normalization,
    fit_normalization_no_change,
    irmad_chi2,
    irmad_fit,
    irmad_probability,
)

GAIN = np.array([1.10, 0.90, 1.20, 0.85, 1.05, 0.95], np.float32)
OFFSET = np.array([0.010, -0.020, 0.000, 0.030, -0.010, 0.020], np.float32)


def _scene(seed: int = 0, h: int = 160, w: int = 160, change_frac: float = 0.05):
    """Textured 6-band scene; after = (before - offset) / gain + noise, plus planted change."""
    rng = np.random.default_rng(seed)
    # three endmembers mixed with smooth random abundances: realistic band correlations
    ends = np.array([[0.12, 0.16, 0.22, 0.28, 0.38, 0.34],   # soil
                     [0.04, 0.07, 0.05, 0.40, 0.22, 0.12],   # vegetation
                     [0.14, 0.15, 0.17, 0.20, 0.24, 0.22]],  # built
                    np.float32)  # fmt: skip
    ab = rng.dirichlet([1, 1, 1], size=(h, w)).astype(np.float32)
    before = np.einsum("hwk,kb->bhw", ab, ends) + rng.normal(0, 0.004, (6, h, w))
    after = (before - OFFSET[:, None, None]) / GAIN[:, None, None]
    after = after + rng.normal(0, 0.004, (6, h, w))
    n = int(change_frac * h * w)
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    after[:, ys, xs] += rng.uniform(0.05, 0.2, (6, 1))
    return before.astype(np.float32), after.astype(np.float32)


def test_chi2_closed_form_matches_scipy() -> None:
    z = np.linspace(0, 40, 101).astype(np.float32)
    for dof in (2, 4, 6, 12):
        np.testing.assert_allclose(chi2_sf_even(z, dof), stats.chi2.sf(z, dof), atol=1e-6)
    np.testing.assert_allclose(chi2_sf(z, 5), stats.chi2.sf(z, 5), atol=1e-6)
    with pytest.raises(ValueError):
        chi2_sf_even(z, 3)


def test_irmad_recovers_gain_and_offset() -> None:
    before, after = _scene()
    norm = fit_normalization(before, after)
    np.testing.assert_allclose(norm.gain, GAIN, rtol=0.02)
    np.testing.assert_allclose(norm.offset, OFFSET, atol=0.004)
    assert norm.converged and norm.iterations > 1
    assert 0.3 * before[0].size < norm.n_no_change < before[0].size


def test_irmad_weights_flag_planted_change() -> None:
    before, after = _scene(change_frac=0.0)
    rng = np.random.default_rng(1)
    after[:, :20, :20] += np.array([0.1, 0.05, -0.05, 0.1, 0.0, -0.1])[:, None, None]
    p = before.shape[0]
    xy = np.concatenate([before.reshape(p, -1), after.reshape(p, -1)]).T.copy()
    model, prob = irmad_fit(xy)
    prob = prob.reshape(before.shape[1:])
    assert prob[:20, :20].mean() < 0.01
    assert prob[40:, 40:].mean() > 0.3
    del rng, model


def test_normalization_robust_to_nan_and_sample_shape() -> None:
    before, after = _scene(seed=2)
    before[:, :30] = np.nan
    after[2, 50:60, :] = np.nan
    norm = fit_normalization(before, after)
    np.testing.assert_allclose(norm.gain, GAIN, rtol=0.03)
    # a subsample given as (p, N) works the same
    flat_b = before.reshape(6, -1)[:, ::3]
    flat_a = after.reshape(6, -1)[:, ::3]
    norm2 = fit_normalization(flat_b, flat_a)
    np.testing.assert_allclose(norm2.gain, GAIN, rtol=0.03)
    out = apply_normalization(after, norm)
    assert out.dtype == np.float32
    assert np.isnan(out[:, 50:60][2]).all()
    valid = np.isfinite(out).all(axis=0) & np.isfinite(before).all(axis=0)
    resid = np.abs(out - before)[:, valid]
    assert np.median(resid) < 0.006


def test_normalization_json_roundtrip_and_identity_fallback() -> None:
    before, after = _scene(seed=3)
    norm = fit_normalization(before, after)
    again = Normalization.model_validate_json(norm.model_dump_json())
    assert again == norm
    tiny = fit_normalization(before[:, :2, :2], after[:, :2, :2])
    assert tiny.gain == [1.0] * 6 and tiny.offset == [0.0] * 6


def test_row_medians_exact_on_awkward_rows() -> None:
    """The histogram selection gives np.median's value on ties, heavy tails, constants, tiny rows."""
    rng = np.random.default_rng(4)
    for n in (1, 2, 5, 1000, 200_001):
        rows = np.stack(
            [
                rng.normal(size=n),
                np.round(rng.normal(size=n) * 10) / 10,  # many ties
                rng.standard_cauchy(size=n) * 1e4,  # a range far wider than the spread
                np.full(n, 0.25),
                np.r_[np.zeros(n - n // 2), np.full(n // 2, 7.0)],  # two values only
            ]
        ).astype(np.float32)
        want = [0.5 * (float(np.sort(r)[(n - 1) // 2]) + float(np.sort(r)[n // 2])) for r in rows]
        np.testing.assert_array_equal(_row_medians(rows), want)


def test_fused_passes_match_plain_numpy() -> None:
    """Weighted moments and no-change probabilities of the fused kernels equal the textbook formulas."""
    before, after = _scene(seed=5)
    xy = np.concatenate([before.reshape(6, -1), after.reshape(6, -1)]).T.copy()
    w = np.random.default_rng(6).random(len(xy)).astype(np.float32)
    sw, mean, cov = _weighted_moments(xy, w)
    x64 = xy.astype(np.float64)
    np.testing.assert_allclose(sw, w.sum(dtype=np.float64), rtol=1e-9)
    np.testing.assert_allclose(mean, np.average(x64, axis=0, weights=w), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x64, rowvar=False, aweights=w, bias=True), rtol=1e-7, atol=1e-12)
    model, _ = irmad_fit(xy)
    args = (np.array(model.mean_before + model.mean_after), np.array(model.a), np.array(model.b))
    var = np.square(model.mad_std)
    mads = (x64 - args[0]) @ np.concatenate([args[1], -args[2]]) / np.sqrt(var)
    z = np.sum(mads * mads, axis=1)
    np.testing.assert_allclose(irmad_chi2(xy, *args, var), z, rtol=1e-5)
    np.testing.assert_allclose(irmad_probability(xy, *args, var), stats.chi2.sf(z, 6), atol=1e-6)


def test_mad_passes_sum_in_row_order() -> None:
    """The chunked MAD passes give the row-by-row float64 sums bit for bit (a partial last chunk)."""
    rng = np.random.default_rng(7)
    xy = rng.normal(0.2, 0.1, (1001, 12)).astype(np.float32)
    t = rng.normal(size=(12, 6))
    shift = rng.normal(size=6)
    x64 = xy.astype(np.float64)
    want = np.empty((6, len(xy)))
    for c in range(6):
        d = np.full(len(xy), -shift[c])
        for j in range(12):
            d = d + x64[:, j] * t[j, c]  # in j order, as a row-by-row loop adds them
        want[c] = d
    np.testing.assert_array_equal(_mads(xy, t, shift), want.astype(np.float32))
    z = np.zeros(len(xy))
    for c in range(6):
        z = z + want[c] * want[c]
    np.testing.assert_array_equal(_mad_chi2(xy, t, shift, 0), z.astype(np.float32))


def test_change_model_from_the_normalisation_irmad_equals_a_refit() -> None:
    """The normalisation's IR-MAD, mapped onto the normalised after bands, stands in for the change
    model's own IR-MAD fit: same no-change weights, MAD transform and noise scale up to rounding
    (the map matters: the gains differ from 1 by 5-20 %)."""
    before, after = _scene(seed=4)
    norm, no_change = fit_normalization_no_change(before, after)
    assert no_change is not None and no_change.model.converged
    after_n = apply_normalization(after, norm)
    params = ChangeParams()
    reused = fit_change_model(before, after_n, params, no_change)
    refit = fit_change_model(before, after_n, params)
    assert reused.irmad_b != refit.irmad_b  # taken from the normalisation, not fitted again
    np.testing.assert_allclose(reused.irmad_rho, refit.irmad_rho, atol=1e-4)
    np.testing.assert_allclose(reused.noise_scale, refit.noise_scale, rtol=1e-3)
    np.testing.assert_allclose(reused.irmad_mean, refit.irmad_mean, atol=1e-5)
    np.testing.assert_allclose(reused.sample_change_fraction, refit.sample_change_fraction, atol=1e-3)
    xy = np.concatenate([before.reshape(6, -1), after_n.reshape(6, -1)]).T.copy()
    chi2 = [
        irmad_chi2(xy, *(np.asarray(v) for v in (m.irmad_mean, m.irmad_a, m.irmad_b, m.irmad_var)))
        for m in (reused, refit)
    ]
    np.testing.assert_allclose(chi2[0], chi2[1], rtol=1e-3, atol=1e-3)
    unconverged = NoChangeFit(no_change.model.model_copy(update={"converged": False}), no_change.probability)
    assert fit_change_model(before, after_n, params, unconverged) == refit
