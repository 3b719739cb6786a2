"""Unsupervised change detection: evidence, calibrated score, threshold and change typing.

Two phases, so that tiles never see per-tile statistics (no seams):

* ``fit_change_model`` — once per pair, on a sample of the scene: per-band no-change noise
  scale of the normalised differences (from IR-MAD no-change probabilities), the IR-MAD
  canonical transform, and the decision threshold of the evidence.
* ``change_score`` / ``change_classes`` — per tile (with a halo of ``HALO_PX``), using only
  the fitted model and local neighbourhood operations.

Evidence (all in units of the no-change noise, so one threshold means the same thing on
every pair):

1. shift-tolerant change vector magnitude: for each pixel, the smallest noise-normalised
   spectral distance between the pixel of one date and the pixels within ``shift_radius_px``
   in the other date, taken in both directions and keeping the larger (a pixel on an edge
   that only moved by a residual sub-pixel shift finds its match next door; a new object
   does not);
2. IR-MAD chi-square of the pixel (optional weight ``w_irmad``);
3. local averaging (Gaussian, ``smooth_sigma_px``): changes that matter are objects of
   several pixels, noise is not;
4. local structure change (``structure_radius_px``): one minus the contrast-structure term of
   SSIM between the dates in a square window, per band in noise units, averaged over bands.
   A change that keeps the local pattern (phenology of a field, a brighter sea, illumination:
   ``after ~ before + offset`` in the window; a contrast gain g costs 1 - 2g/(1+g^2)) scores
   ~0; a new or removed object, which rewrites the pattern, ~1. The evidence is the CVA
   magnitude times this factor.

The evidence ``e`` becomes ``change_score = 1 / (1 + exp(-(e - T) / softness))`` where ``T`` is
the fitted threshold: the score is 0.5 exactly at the decision boundary, so the pipeline's
``score_threshold = 0.5`` reproduces the detector's own decision, and moving it trades
precision for recall in a calibrated way.

Typing (``change_classes``) reads the direction of the change in index space (NDVI, NDBI,
MNDWI and a soil index (B11-B02)/(B11+B02) of both dates): vegetation gain (lomas greening)
is class 5, changes of water on water (sun glint, turbidity) class 6, never man-made.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numba
import numpy as np
from pydantic import BaseModel, Field, model_validator
from scipy import ndimage

from imagery.components import sieve_mask
from imagery.morphology import dilate, disk, erode, half_widths
from imagery.normalize import NoChangeFit, _valid_pairs, irmad_chi2, irmad_fit

#: Widest neighbourhood (pixels) any per-tile operation reads: tiles need this much halo.
HALO_PX = 8

NO_CHANGE = 0
BUILT_GAIN = 1
SOIL_DISTURBANCE = 2
BUILT_LOSS = 3
VEGETATION_LOSS = 4
VEGETATION_GAIN = 5
WATER_CHANGE = 6
NODATA = 255
#: Classes scored as man-made change (and sieved by the minimum mapping unit).
MAN_MADE_CLASSES: tuple[int, ...] = (BUILT_GAIN, SOIL_DISTURBANCE, BUILT_LOSS)
CLASS_NAMES: dict[int, str] = {
    NO_CHANGE: "no change", BUILT_GAIN: "new construction / built-up gain",
    SOIL_DISTURBANCE: "soil disturbance / land clearing", BUILT_LOSS: "demolition / built-up loss",
    VEGETATION_LOSS: "vegetation loss", VEGETATION_GAIN: "vegetation gain",
    WATER_CHANGE: "water change", NODATA: "no data",
}  # fmt: skip

# band positions in imagery.sentinel2.CHANGE_BANDS
_B, _G, _R, _N, _S1, _S2 = range(6)


class DetectorParams(BaseModel):
    """Tuning of the detector; defaults are the ones scored on OSCD (docs/change-detection.md)."""

    shift_radius_px: int = Field(
        default=1,
        ge=0,
        le=2,
        description="Residual misregistration tolerated by the shift-tolerant change vector, px.",
    )
    w_irmad: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Weight of the IR-MAD chi evidence against the shift-tolerant CVA (0: off).",
    )
    smooth_sigma_px: float = Field(
        default=1.0,
        ge=0,
        le=2.0,
        description="Gaussian averaging of the evidence, pixels (truncated at 3 sigma).",
    )
    structure_radius_px: int = Field(
        default=4,
        ge=0,
        le=HALO_PX,
        description="Half-width of the square window of the local structure change factor, px "
        "(0: off, evidence = CVA alone; then fixed_threshold ~7 is the matching cut).",
    )
    structure_c: float = Field(
        default=1.0,
        gt=0,
        description="Stabilising constant of the structure term, squared noise units: windows "
        "with less local variance than this count as flat (factor ~0.5 when flat on both dates).",
    )
    threshold_method: Literal["fixed", "kittler"] = Field(
        default="fixed",
        description="'fixed': evidence threshold = fixed_threshold; 'kittler' (CVA alone, "
        "structure_radius_px = 0): Kittler-Illingworth minimum-error cut of the log-evidence "
        "histogram of the fit sample, clipped to [min_threshold, max_threshold].",
    )
    fixed_threshold: float = Field(
        default=3.5,
        gt=0,
        description="Evidence threshold ('fixed'): noise units times the structure factor "
        "(0..2); 7 is the matching cut for the CVA alone (structure_radius_px = 0).",
    )
    min_threshold: float = Field(default=4.0, gt=0, description="Lower clip of a fitted cut.")
    max_threshold: float = Field(default=12.0, gt=0, description="Upper clip of a fitted cut.")
    softness: float = Field(
        default=1.0,
        gt=0,
        description="Width of the logistic score around the threshold, noise units.",
    )
    irmad_max_iter: int = Field(default=20, ge=1, le=100, description="IR-MAD iterations.")
    ndvi_vegetation: float = Field(
        default=0.3, description="NDVI (TOA or BOA) above which a pixel is vegetated."
    )
    veg_gain_dndvi: float = Field(
        default=0.1,
        description="NDVI increase above which a change to a vegetated pixel is vegetation "
        "gain (class 5, e.g. lomas greening).",
    )
    mndwi_water: float = Field(default=0.1, description="MNDWI above which a pixel is water...")
    water_nir_max: float = Field(
        default=0.08,
        description="...if its NIR reflectance is also below this (shadows are not water).",
    )
    ndbi_built: float = Field(
        default=0.0,
        description="NDBI above which a pixel that was water is new land (reclamation) "
        "rather than a brighter water surface (glint, turbidity).",
    )
    open_radius_px: int = Field(
        default=1, ge=0, le=3, description="Opening radius of the man-made mask (0: off)."
    )
    close_radius_px: int = Field(
        default=1, ge=0, le=3, description="Closing radius of the man-made mask (0: off)."
    )

    @model_validator(mode="after")
    def _fits_in_halo(self) -> DetectorParams:
        reach = (
            max(self.shift_radius_px + math.ceil(3 * self.smooth_sigma_px), self.structure_radius_px)
            + self.open_radius_px
            + self.close_radius_px
        )
        if reach > HALO_PX:
            raise ValueError(f"neighbourhood reach {reach} px exceeds HALO_PX={HALO_PX}")
        if self.min_threshold > self.max_threshold:
            raise ValueError("min_threshold > max_threshold")
        if self.threshold_method == "kittler" and self.structure_radius_px > 0:
            # the cut is fitted on the pixelwise CVA of a (possibly scattered) sample, which
            # has no windows: it is a cut for the CVA alone
            raise ValueError("threshold_method 'kittler' needs structure_radius_px = 0")
        return self


def detector_params(params: Any) -> DetectorParams:
    """The DetectorParams of a ChangeParams (``params.model`` dict or an embedded model)."""
    if isinstance(params, DetectorParams):
        return params
    model = getattr(params, "model", None)
    if isinstance(model, DetectorParams):
        return model
    if isinstance(model, dict):
        return DetectorParams(**model)
    detector = getattr(params, "detector", None)
    if isinstance(detector, DetectorParams):
        return detector
    return DetectorParams()


class ChangeModel(BaseModel):
    """Global statistics of one pair, fitted once on a sample and applied to every tile."""

    noise_scale: list[float] = Field(
        description="Per-band robust std of after-before on no-change pixels (reflectance)."
    )
    irmad_mean: list[float] = Field(description="IR-MAD weighted mean, before then after bands.")
    irmad_a: list[list[float]]
    irmad_b: list[list[float]]
    irmad_var: list[float] = Field(description="Variance of each MAD variate on no-change.")
    irmad_rho: list[float] = Field(description="Canonical correlations.")
    threshold: float = Field(description="Decision threshold of the evidence (noise units).")
    threshold_method: str
    n_pixels: int = Field(description="Valid pixels in the fit sample.")
    sample_change_fraction: float = Field(
        description="Share of the sample above threshold (pixelwise evidence, before smoothing)."
    )


# --------------------------------------------------------------------------- thresholds


def otsu_threshold(values: np.ndarray, bins: int = 512) -> float:
    """Otsu's threshold on a histogram (for comparison; fails on unimodal histograms)."""
    v = values[np.isfinite(values)]
    hist, edges = np.histogram(v, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mt = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 / w0[-1] - m0) ** 2 / (w0 * w1 / w0[-1])
    between[~np.isfinite(between)] = -1
    return float(centres[int(np.argmax(between))])


def kittler_illingworth_threshold(values: np.ndarray, bins: int = 512) -> float:
    """Kittler-Illingworth minimum-error threshold of a two-Gaussian mixture.

    Minimises ``J(t) = P0 ln s0^2 + P1 ln s1^2 - 2 (P0 ln P0 + P1 ln P1)`` over the histogram
    cut ``t``; unlike Otsu it does not assume similar class sizes or variances, so it finds a
    small change class (1-4 %) in the long tail of a unimodal-looking histogram.
    """
    v = values[np.isfinite(values)]
    hist, edges = np.histogram(v, bins=bins)
    c = 0.5 * (edges[:-1] + edges[1:])
    h = hist.astype(np.float64)
    n0 = np.cumsum(h)
    s0 = np.cumsum(h * c)
    q0 = np.cumsum(h * c * c)
    n = n0[-1]
    n1 = n - n0
    s1 = s0[-1] - s0
    q1 = q0[-1] - q0
    with np.errstate(divide="ignore", invalid="ignore"):
        m0, m1 = s0 / n0, s1 / n1
        v0 = q0 / n0 - m0 * m0
        v1 = q1 / n1 - m1 * m1
        p0, p1 = n0 / n, n1 / n
        j = p0 * np.log(v0) + p1 * np.log(v1) - 2 * (p0 * np.log(p0) + p1 * np.log(p1))
    binw = float(edges[1] - edges[0])
    ok = (n0 >= 2) & (n1 >= 2) & (v0 > (binw * binw) / 12) & (v1 > (binw * binw) / 12)
    j[~(ok & np.isfinite(j))] = np.inf
    if not np.isfinite(j).any():
        return float(np.quantile(v, 0.99))
    return float(edges[int(np.argmin(j)) + 1])


# --------------------------------------------------------------------------- kernels


@numba.njit(fastmath={"contract"}, cache=True, nogil=True)
def _shift_tolerant_distance(
    b: np.ndarray, a: np.ndarray, inv_s: np.ndarray, radius: int
) -> np.ndarray:  # pragma: no cover - compiled
    """sqrt(max(min_o |a(x+o)-b(x)|^2, min_o |a(x)-b(x+o)|^2)) with per-band 1/scale.

    Each |a(p+o)-b(p)|^2 is computed once, for a row of p at a time (vectorised along the row),
    and serves both directions: it is a candidate of the first minimum at p and of the second at
    p+o. The second minimum of a row is final once the rows `radius` below are done; it is kept in
    a ring of 2 radius + 1 rows, the first minimum in `out` until then."""
    nb, h, w = b.shape
    ring = 2 * radius + 1
    out = np.empty((h, w), np.float32)
    best_ba = np.full((ring, w), np.inf, np.float32)
    d = np.empty(w, np.float32)
    ok = np.empty(w, np.bool_)
    for y in range(h + radius):
        if y < h:
            out[y, :] = np.inf
            best_ba[(y + radius) % ring, :] = np.inf
            for yy in range(max(y - radius, 0), min(y + radius, h - 1) + 1):
                ba = best_ba[yy % ring]
                for dx in range(-radius, radius + 1):
                    x0, x1 = max(0, -dx), min(w, w - dx)
                    d[x0:x1] = 0.0
                    for k in range(0, nb - 1, 2):  # two bands a pass over d: half its loads and stores
                        _add_scaled_squares(
                            d[x0:x1], a[k, yy, x0 + dx : x1 + dx], b[k, y, x0:x1], inv_s[k],
                            a[k + 1, yy, x0 + dx : x1 + dx], b[k + 1, y, x0:x1], inv_s[k + 1],
                        )  # fmt: skip
                    if nb % 2:
                        k = nb - 1
                        _add_scaled_square(d[x0:x1], a[k, yy, x0 + dx : x1 + dx], b[k, y, x0:x1], inv_s[k])
                    _keep_smaller(out[y, x0:x1], d[x0:x1])
                    _keep_smaller(ba[x0 + dx : x1 + dx], d[x0:x1])
        done = y - radius  # no later row reaches this one
        if done >= 0:
            ba, row = best_ba[done % ring], out[done]
            _valid_row(b[:, done], a[:, done], ok)
            for x in range(w):
                row[x] = np.sqrt(max(row[x], ba[x])) if ok[x] else np.nan
    return out


@numba.njit(fastmath={"contract"}, cache=True, nogil=True, inline="always")
def _add_scaled_square(d: np.ndarray, a: np.ndarray, b: np.ndarray, s: float) -> None:  # pragma: no cover
    """d += ((a - b) * s)^2, element by element."""
    for x in range(d.size):
        t = (a[x] - b[x]) * s
        d[x] += t * t


@numba.njit(fastmath={"contract"}, cache=True, nogil=True, inline="always")
def _add_scaled_squares(
    d: np.ndarray, a0: np.ndarray, b0: np.ndarray, s0: float, a1: np.ndarray, b1: np.ndarray, s1: float
) -> None:  # pragma: no cover - compiled
    """`_add_scaled_square` of two bands, the first added first (the same roundings)."""
    for x in range(d.size):
        t0 = (a0[x] - b0[x]) * s0
        t1 = (a1[x] - b1[x]) * s1
        v = d[x] + t0 * t0
        d[x] = v + t1 * t1


@numba.njit(cache=True, nogil=True, inline="always")
def _keep_smaller(best: np.ndarray, d: np.ndarray) -> None:  # pragma: no cover - compiled
    """best = d where d < best (a NaN d compares False and is skipped), branch-free."""
    for x in range(best.size):
        best[x] = d[x] if d[x] < best[x] else best[x]


def _nan_gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised Gaussian average ignoring NaN (NaN stays NaN); truncated at 3 sigma.

    scipy's ``gaussian_filter(mode="nearest", truncate=3)`` of the NaN-zeroed values over that
    of the valid mask, bit for bit, in one compiled pass (`_nan_gaussian_rows`)."""
    if sigma <= 0:
        return x
    src = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(src.shape, np.float32)
    _nan_gaussian_rows(src, _gaussian_weights(sigma), out)
    return out


def _gaussian_weights(sigma: float) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian weights for `sigma` truncated at 3 sigma (float64, symmetric)."""
    radius = int(3.0 * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return np.asarray(phi / phi.sum())


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _nan_gaussian_rows(x: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """`_nan_gaussian` of the 2-D `x` into `out`, row by row, as scipy computes it: per axis (rows
    first) each value is ``w0 * v + sum over k = r..1 of (v[-k] + v[+k]) * wk`` in float64 with
    edge values repeated, rounded to float32 between the axes; then the numerator (NaN-zeroed
    values) over the denominator (the valid mask) in float32, NaN where `x` is not finite."""
    h, w = x.shape
    r = weights.size // 2
    w0 = weights[r]
    num = np.empty(w)
    den = np.empty(w)
    num_row = np.empty(w + 2 * r, np.float32)  # the rows pass, with r edge copies on either side
    den_row = np.empty(w + 2 * r, np.float32)
    for i in range(h):
        row = x[i]
        for j in range(w):
            ok = np.isfinite(row[j])
            num[j] = (np.float64(row[j]) if ok else 0.0) * w0
            den[j] = (1.0 if ok else 0.0) * w0
        for k in range(r, 0, -1):
            up, down, wk = x[max(i - k, 0)], x[min(i + k, h - 1)], weights[r - k]
            for j in range(w):
                u_ok, d_ok = np.isfinite(up[j]), np.isfinite(down[j])
                u = np.float64(up[j]) if u_ok else 0.0
                d = np.float64(down[j]) if d_ok else 0.0
                num[j] += (u + d) * wk
                den[j] += ((1.0 if u_ok else 0.0) + (1.0 if d_ok else 0.0)) * wk
        for j in range(w):
            num_row[r + j] = np.float32(num[j])
            den_row[r + j] = np.float32(den[j])
        for j in range(r):
            num_row[j], den_row[j] = num_row[r], den_row[r]
            num_row[r + w + j], den_row[r + w + j] = num_row[r + w - 1], den_row[r + w - 1]
        for j in range(w):
            num[j] = np.float64(num_row[r + j]) * w0
            den[j] = np.float64(den_row[r + j]) * w0
        for k in range(r, 0, -1):
            wk = weights[r - k]
            for j in range(w):
                num[j] += (np.float64(num_row[r + j - k]) + np.float64(num_row[r + j + k])) * wk
                den[j] += (np.float64(den_row[r + j - k]) + np.float64(den_row[r + j + k])) * wk
        for j in range(w):
            out[i, j] = np.float32(num[j]) / np.float32(den[j]) if np.isfinite(row[j]) else np.nan


def local_structure_change(
    before: np.ndarray, after: np.ndarray, inv_scale: np.ndarray, radius: int, c: float
) -> np.ndarray:
    """1 - mean over bands of SSIM's contrast-structure term in a square window (float32, 0..2).

    Per band, in noise units: ``(2 cov + c) / (var_before + var_after + c)`` over the window's
    valid pixels. 0: the after pattern is the before pattern up to an offset (a contrast gain g
    gives 1 - 2g/(1+g^2)); ~1: unrelated patterns or a pattern on a flat surface; 2: inverted.
    NaN where a pixel is invalid.
    """
    b = np.ascontiguousarray(before, dtype=np.float32)
    a = np.ascontiguousarray(after, dtype=np.float32)
    out = np.empty(b.shape[1:], np.float32)
    _structure_change(b, a, np.asarray(inv_scale, np.float32).astype(np.float64), int(radius), float(c), out)
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _structure_change(
    before: np.ndarray, after: np.ndarray, inv_scale: np.ndarray, radius: int, c: float, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """`local_structure_change` in one pass over the rows, in float64: per band, the sums of
    x, y, x^2, y^2 and xy over the valid pixels of each column's window (updated by the row that
    enters and the row that leaves), their window sums along the row, and the moments as those
    sums over the window's count of valid pixels. Every loop runs along a row (vectorised)."""
    nb, h, w = before.shape
    valid = np.empty((h, w), np.bool_)
    for i in range(h):
        _valid_row(before[:, i], after[:, i], valid[i])
    pad = radius + 1  # zero columns on either side of the column sums: the window's ends
    col = np.zeros((nb, 5, w + 2 * pad))
    count = np.zeros(w + 2 * pad)
    win = np.empty((5, w))
    inv_count = np.empty(w)
    total = np.empty(w)
    for i in range(-radius, h):  # the rows above the first output row enter first
        new, old = min(i + radius, h - 1), max(i - radius - 1, 0)
        n_in = 1.0 if i + radius < h else 0.0  # weight of the entering and the leaving row
        n_out = 1.0 if i - radius - 1 >= 0 else 0.0
        _count_update(count[pad : pad + w], valid[new], valid[old], n_in, n_out)
        for k in range(nb):
            s = inv_scale[k]
            _moments_update(
                col[k, :, pad : pad + w], before[k, new], after[k, new], valid[new],
                before[k, old], after[k, old], valid[old], s * n_in, s * n_out,
            )  # fmt: skip
        if i < 0:
            continue
        _window_sum(count, win[0], radius)
        for j in range(w):
            inv_count[j] = 1.0 / win[0, j] if valid[i, j] else 0.0
        total[:] = 0.0
        for k in range(nb):
            _window_sums5(col[k], win, radius)
            _add_structure(win[0], win[1], win[2], win[3], win[4], inv_count, c, total)
        for j in range(w):
            out[i, j] = np.float32(1.0 - total[j] / nb) if valid[i, j] else np.nan


@numba.njit(cache=True, nogil=True, inline="always")
def _valid_row(before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> None:  # pragma: no cover
    """valid = every band of (bands, x) before and after finite."""
    valid[:] = True
    for k in range(before.shape[0]):
        b, a = before[k], after[k]
        for j in range(valid.size):
            valid[j] &= np.isfinite(b[j]) & np.isfinite(a[j])


@numba.njit(cache=True, nogil=True, inline="always")
def _count_update(
    count: np.ndarray, valid_in: np.ndarray, valid_out: np.ndarray, n_in: float, n_out: float
) -> None:  # pragma: no cover - compiled
    """count += n_in * valid_in - n_out * valid_out."""
    for j in range(count.size):
        count[j] += (n_in if valid_in[j] else 0.0) - (n_out if valid_out[j] else 0.0)


@numba.njit(cache=True, nogil=True, inline="always")
def _moments_update(
    col: np.ndarray,
    b_in: np.ndarray,
    a_in: np.ndarray,
    valid_in: np.ndarray,
    b_out: np.ndarray,
    a_out: np.ndarray,
    valid_out: np.ndarray,
    s_in: float,
    s_out: float,
) -> None:  # pragma: no cover - compiled
    """col[0..4] += moments (x, y, x^2, y^2, xy) of the entering row minus those of the leaving
    one; x, y are before, after times s_in / s_out (0: no row), 0 where the pixel is invalid."""
    c0, c1, c2, c3, c4 = col[0], col[1], col[2], col[3], col[4]
    for j in range(c0.size):
        xn = np.float64(b_in[j]) * s_in if valid_in[j] else 0.0
        yn = np.float64(a_in[j]) * s_in if valid_in[j] else 0.0
        xo = np.float64(b_out[j]) * s_out if valid_out[j] else 0.0
        yo = np.float64(a_out[j]) * s_out if valid_out[j] else 0.0
        c0[j] += xn - xo
        c1[j] += yn - yo
        c2[j] += xn * xn - xo * xo
        c3[j] += yn * yn - yo * yo
        c4[j] += xn * yn - xo * yo


@numba.njit(cache=True, nogil=True, inline="always")
def _window_sum(src: np.ndarray, dst: np.ndarray, radius: int) -> None:  # pragma: no cover - compiled
    """dst[j] = sum of src[j + 1 .. j + 2 radius + 1] (`src` has radius + 1 zero entries on either
    side): a running sum, each step adding the entering value and subtracting the leaving one."""
    s = 0.0
    for j in range(1, 2 * radius + 1):
        s += src[j]
    for j in range(dst.size):
        s += src[j + 2 * radius + 1] - src[j]
        dst[j] = s


@numba.njit(cache=True, nogil=True, inline="always")
def _window_sums5(src: np.ndarray, dst: np.ndarray, radius: int) -> None:  # pragma: no cover - compiled
    """`_window_sum` of the 5 rows of `src` into those of `dst`, advanced together (5 independent
    chains in flight instead of one)."""
    a0, a1, a2, a3, a4 = src[0], src[1], src[2], src[3], src[4]
    d0, d1, d2, d3, d4 = dst[0], dst[1], dst[2], dst[3], dst[4]
    s0 = s1 = s2 = s3 = s4 = 0.0
    for j in range(1, 2 * radius + 1):
        s0 += a0[j]
        s1 += a1[j]
        s2 += a2[j]
        s3 += a3[j]
        s4 += a4[j]
    step = 2 * radius + 1
    for j in range(d0.size):
        s0 += a0[j + step] - a0[j]
        s1 += a1[j + step] - a1[j]
        s2 += a2[j + step] - a2[j]
        s3 += a3[j + step] - a3[j]
        s4 += a4[j + step] - a4[j]
        d0[j] = s0
        d1[j] = s1
        d2[j] = s2
        d3[j] = s3
        d4[j] = s4


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _add_structure(
    sx: np.ndarray,
    sy: np.ndarray,
    sxx: np.ndarray,
    syy: np.ndarray,
    sxy: np.ndarray,
    inv_count: np.ndarray,
    c: float,
    total: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """total += (2 cov + c) / (var_x + var_y + c) of the window sums (variances floored at 0)."""
    for j in range(total.size):
        n = inv_count[j]
        mx = sx[j] * n
        my = sy[j] * n
        vx = sxx[j] * n - mx * mx
        vy = syy[j] * n - my * my
        vx = vx if vx > 0.0 else 0.0
        vy = vy if vy > 0.0 else 0.0
        total[j] += (2 * (sxy[j] * n - mx * my) + c) / (vx + vy + c)


def _pixel_irmad_chi(before: np.ndarray, after: np.ndarray, model: ChangeModel) -> np.ndarray:
    """sqrt of the IR-MAD chi-square of each pixel, scaled to the CVA's noise units."""
    p, h, w = before.shape
    xy = np.concatenate([before.reshape(p, -1), after.reshape(p, -1)], axis=0).T
    xy = np.ascontiguousarray(xy, dtype=np.float32)
    z = irmad_chi2(
        xy,
        np.asarray(model.irmad_mean),
        np.asarray(model.irmad_a),
        np.asarray(model.irmad_b),
        np.asarray(model.irmad_var),
    )
    return np.sqrt(z).reshape(h, w)


def change_evidence(
    before: np.ndarray, after_normalized: np.ndarray, model: ChangeModel, params: Any
) -> np.ndarray:
    """Combined change evidence in noise units (float32 (H, W), NaN where invalid)."""
    dp = detector_params(params)
    b = np.ascontiguousarray(before, dtype=np.float32)
    a = np.ascontiguousarray(after_normalized, dtype=np.float32)
    inv_s = (1.0 / np.asarray(model.noise_scale, np.float32)).astype(np.float32)
    e = _shift_tolerant_distance(b, a, inv_s, dp.shift_radius_px)
    if dp.w_irmad > 0:
        chi = _pixel_irmad_chi(b, a, model)
        e = ((1 - dp.w_irmad) * e + dp.w_irmad * chi).astype(np.float32)
    e = _nan_gaussian(e, dp.smooth_sigma_px)
    if dp.structure_radius_px > 0:
        factor = local_structure_change(b, a, inv_s, dp.structure_radius_px, dp.structure_c)
        e = np.multiply(e, np.maximum(factor, 0, out=factor), out=factor)
    return e


# --------------------------------------------------------------------------- fit / apply


def _reusable(no_change: NoChangeFit, n: int, max_iter: int) -> bool:
    """Whether an IR-MAD fit is the one `irmad_fit` would make on this n-pixel sample: one
    probability per pixel, converged within `max_iter` iterations."""
    return (
        len(no_change.probability) == n
        and no_change.model.converged
        and no_change.model.iterations <= max_iter
    )


def fit_change_model(
    before: np.ndarray, after_normalized: np.ndarray, params: Any, no_change: NoChangeFit | None = None
) -> ChangeModel:
    """Fit the pair's global statistics on a sample (windows or a subsample; NaN allowed).

    `no_change`: the normalisation's IR-MAD fit on the same sample, mapped onto the normalised
    after bands (`normalize.fit_normalization_no_change`); IR-MAD is invariant to that map, so it
    is this sample's fit up to rounding and is used instead of fitting again when it converged
    within ``irmad_max_iter`` iterations."""
    dp = detector_params(params)
    p = before.shape[0]
    xy = _valid_pairs(before, after_normalized)
    if len(xy) < 8 * p:
        raise ValueError(f"fit_change_model: only {len(xy)} valid pixels in the sample")
    if no_change is not None and _reusable(no_change, len(xy), dp.irmad_max_iter):
        irmad, prob = no_change.model, no_change.probability
    else:
        irmad, prob = irmad_fit(xy, max_iter=dp.irmad_max_iter)
    # robust per-band noise of the difference on (probable) no-change pixels
    d = xy[:, p:] - xy[:, :p]
    keep = prob > 0.5
    if keep.sum() < 4 * p:
        keep = np.ones(len(xy), bool)
    dk = d[keep]
    med = np.median(dk, axis=0)
    scale = 1.4826 * np.median(np.abs(dk - med), axis=0)
    scale = np.maximum(scale, 1e-4).astype(np.float64)
    # pixelwise evidence of the sample (no neighbourhood: the sample may be scattered pixels)
    ev = np.sqrt(np.sum((d / scale.astype(np.float32)) ** 2, axis=1))
    if dp.threshold_method == "kittler":
        t = float(np.exp(kittler_illingworth_threshold(np.log(np.maximum(ev, 1e-3)))))
        t = float(np.clip(t, dp.min_threshold, dp.max_threshold))
    else:
        t = dp.fixed_threshold
    return ChangeModel(
        noise_scale=scale.tolist(),
        irmad_mean=irmad.mean_before + irmad.mean_after,
        irmad_a=irmad.a,
        irmad_b=irmad.b,
        irmad_var=[s * s for s in irmad.mad_std],
        irmad_rho=irmad.rho,
        threshold=t,
        threshold_method=dp.threshold_method,
        n_pixels=len(xy),
        sample_change_fraction=float(np.mean(ev > t)),
    )


def change_score(
    before: np.ndarray, after_normalized: np.ndarray, model: ChangeModel, params: Any
) -> np.ndarray:
    """Calibrated change score in 0..1 (0.5 = the fitted decision threshold); NaN invalid."""
    dp = detector_params(params)
    score = change_evidence(before, after_normalized, model, dp)  # a new float32 array
    # 1 / (1 + exp(-(e - T) / softness)), step by step in place (the same float32 operations)
    score -= np.float32(model.threshold)
    score /= np.float32(dp.softness)
    np.negative(score, out=score)
    with np.errstate(over="ignore"):
        np.exp(score, out=score)
    score += np.float32(1.0)
    return np.divide(np.float32(1.0), score, out=score)


def change_classes(
    before: np.ndarray,
    after_normalized: np.ndarray,
    score: np.ndarray,
    model: ChangeModel,
    params: Any,
) -> np.ndarray:
    """Change type per pixel (uint8): 0 none, 1 built-up gain, 2 soil disturbance, 3 built-up
    loss, 4 vegetation loss, 5 vegetation gain, 6 water change, 255 invalid.

    ``params`` may be a ChangeParams (its ``score_threshold`` is used) or DetectorParams
    (threshold 0.5). Morphological clean-up of the man-made mask is local (radius <= HALO_PX);
    the minimum mapping unit is applied afterwards on the mosaic (apply_min_mapping_unit).
    """
    dp = detector_params(params)
    thr = float(getattr(params, "score_threshold", 0.5))
    out = np.empty(score.shape, np.uint8)
    # thresholds in float32: numpy compares a float32 array with a Python float in float32
    cuts = np.array(
        [thr, dp.ndvi_vegetation, dp.mndwi_water, dp.water_nir_max, dp.ndbi_built, dp.veg_gain_dndvi],
        np.float32,
    )
    _type_changes(
        np.ascontiguousarray(score, np.float32), np.ascontiguousarray(before, np.float32),
        np.ascontiguousarray(after_normalized, np.float32), cuts, out,
    )  # fmt: skip
    return _clean_man_made(out, dp)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _type_changes(
    score: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    cuts: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """out = NODATA where the score or a band of either date is not finite, else the change
    type (`_change_type`) where the score is above cuts[0], else NO_CHANGE. Row by row: validity
    along the row (vectorised), then the type of the row's changed pixels."""
    h, w = score.shape
    thr = cuts[0]
    ok = np.empty(w, np.bool_)
    for i in range(h):
        row = score[i]
        _valid_row(before[:, i], after[:, i], ok)
        for j in range(w):
            ok[j] &= np.isfinite(row[j])
        for j in range(w):
            if not ok[j]:
                out[i, j] = NODATA
            elif row[j] > thr:
                out[i, j] = _change_type(before[:, i, j], after[:, i, j], cuts)
            else:
                out[i, j] = NO_CHANGE


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _normalised_difference(x: np.float32, y: np.float32) -> np.float32:  # pragma: no cover - compiled
    """(x - y) / np.maximum(x + y, 1e-4) in float32, as numpy computes it on float32 arrays."""
    s = x + y
    floor = np.float32(1e-4)
    return (x - y) / (s if (s >= floor or np.isnan(s)) else floor)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _change_type(b: np.ndarray, a: np.ndarray, cuts: np.ndarray) -> np.uint8:  # pragma: no cover - compiled
    """The type of one changed pixel from its bands before (`b`) and after (`a`) in index space
    (NDVI, NDBI, MNDWI, soil index); `cuts` = score threshold, NDVI of vegetation, MNDWI of water,
    NIR below which water is water, NDBI of new land, NDVI gain of vegetation gain (float32).

    Natural classes first: water on either date (glint, turbidity, flooding) unless the after
    pixel became land (reclamation, new construction), then vegetation dynamics. Man-made typing
    from the direction of change: cleared vegetation -> soil disturbance; water filled or a
    surface becoming less soil-like (roofs, pavement) -> built-up gain; a surface becoming more
    soil-like or brighter bare ground -> built-up loss."""
    veg_cut, water_cut, nir_max, built_cut, gain_cut = cuts[1], cuts[2], cuts[3], cuts[4], cuts[5]
    ndvi_b = _normalised_difference(b[_N], b[_R])
    ndvi_a = _normalised_difference(a[_N], a[_R])
    veg_b = ndvi_b > veg_cut
    veg_a = ndvi_a > veg_cut
    wat_b = _normalised_difference(b[_G], b[_S1]) > water_cut and b[_N] < nir_max and not veg_b
    wat_a = _normalised_difference(a[_G], a[_S1]) > water_cut and a[_N] < nir_max and not veg_a
    land_a = not wat_a and not veg_a and _normalised_difference(a[_S1], a[_N]) > built_cut
    if (wat_b and not land_a) or (not wat_b and wat_a):
        return np.uint8(WATER_CHANGE)
    if veg_a and ndvi_a - ndvi_b > gain_cut:
        return np.uint8(VEGETATION_GAIN)
    if veg_b and veg_a:
        return np.uint8(VEGETATION_LOSS)
    if veg_b:  # and not veg_a
        return np.uint8(SOIL_DISTURBANCE)
    dsoil = _normalised_difference(a[_S1], a[_B]) - _normalised_difference(b[_S1], b[_B])
    if wat_b or dsoil < 0:
        return np.uint8(BUILT_GAIN)
    return np.uint8(BUILT_LOSS)


def _clean_man_made(classes: np.ndarray, dp: DetectorParams) -> np.ndarray:
    """Opening then closing of the man-made mask; new pixels take the nearest man-made type (no
    data stays no data)."""
    if not (dp.open_radius_px or dp.close_radius_px):
        return classes.copy()
    # MAN_MADE_CLASSES are BUILT_GAIN.. BUILT_LOSS: one unsigned range test (0 and 255 wrap above)
    man = (classes - np.uint8(BUILT_GAIN)) < np.uint8(len(MAN_MADE_CLASSES))
    cleaned = man
    if dp.open_radius_px:
        half = half_widths(disk(dp.open_radius_px, dp.open_radius_px))
        cleaned = erode(man, half)
        dilate(cleaned, half, out=cleaned)
    if dp.close_radius_px:
        half = half_widths(disk(dp.close_radius_px, dp.close_radius_px))
        cleaned = dilate(cleaned, half, out=None if cleaned is man else cleaned)
        erode(cleaned, half, out=cleaned)
    out = np.empty_like(classes)
    step = _NEAREST_BLOCK_PX
    blocks = np.zeros((-(-classes.shape[0] // step), -(-classes.shape[1] // step)), np.bool_)
    added = cleaned  # `_apply_cleaning` turns the cleaned mask into the added pixels
    if _apply_cleaning(np.ascontiguousarray(classes), man, added, out, blocks, step):
        # an added pixel lies in the closing's disk around a man-made pixel, so its nearest
        # man-made pixel is less than close_radius_px + 1 away
        _nearest_type(classes, man, added, blocks, dp.close_radius_px + 1, out)
    return out


@numba.njit(cache=True, nogil=True)
def _apply_cleaning(
    classes: np.ndarray, man: np.ndarray, cleaned: np.ndarray, out: np.ndarray, blocks: np.ndarray, step: int
) -> bool:  # pragma: no cover - compiled
    """out = classes with NO_CHANGE where the cleaning removed a man-made pixel; `cleaned`
    becomes the pixels it added (cleaned, not man-made and not NODATA), `blocks` marks the
    `step` px blocks holding them. True if it added any."""
    added = False
    for i in range(classes.shape[0]):
        src, m, c, dest = classes[i], man[i], cleaned[i], out[i]
        row_added = False
        for j in range(src.size):
            dest[j] = NO_CHANGE if m[j] and not c[j] else src[j]
            c[j] = c[j] and not m[j] and src[j] != NODATA
            row_added |= c[j]
        if row_added:
            added = True
            for j in range(src.size):
                if c[j]:
                    blocks[i // step, j // step] = True
    return added


#: Edge (px) of the blocks `_nearest_type` runs the distance transform on.
_NEAREST_BLOCK_PX = 64


def _nearest_type(
    classes: np.ndarray,
    source: np.ndarray,
    wanted: np.ndarray,
    blocks: np.ndarray,
    reach: int,
    out: np.ndarray,
) -> None:
    """out = the class of the nearest `source` pixel (scipy's Euclidean feature transform) at
    every `wanted` pixel, for wanted pixels whose nearest source pixel is less than `reach` px
    away; other pixels of `out` are left as they are. `blocks` marks the `_NEAREST_BLOCK_PX`
    blocks holding wanted pixels.

    The transform runs only on those blocks, each with `reach` px of context (the whole tile's
    transform cost more than the rest of the typing)."""
    height, width = source.shape
    step = _NEAREST_BLOCK_PX
    for by, bx in zip(*np.nonzero(blocks), strict=True):
        r0, c0 = int(by) * step, int(bx) * step
        r1, c1 = min(r0 + step, height), min(c0 + step, width)
        y0, x0 = max(r0 - reach, 0), max(c0 - reach, 0)
        near = ndimage.distance_transform_edt(
            ~source[y0 : min(r1 + reach, height), x0 : min(c1 + reach, width)],
            return_distances=False, return_indices=True,
        )  # fmt: skip
        ny = near[0][r0 - y0 : r1 - y0, c0 - x0 : c1 - x0] + y0
        nx = near[1][r0 - y0 : r1 - y0, c0 - x0 : c1 - x0] + x0
        block = wanted[r0:r1, c0:c1]
        out[r0:r1, c0:c1][block] = classes[ny[block], nx[block]]


def drop_small_patches(
    classes: np.ndarray, group: tuple[int, ...], min_pixels: int, connectivity: int = 8
) -> np.ndarray:
    """Patches of the classes in `group` (taken together) smaller than ``min_pixels`` set to 0.

    A patch is a connected component of the group mask (``imagery.components``, the same rule
    publish applies strip by strip on the mosaic); other classes and no data are untouched and
    holes are not filled. Returns a copy.
    """
    if min_pixels <= 1:
        return classes
    member = np.isin(classes, group)
    out = classes.copy()
    out[member & ~sieve_mask(member, min_pixels, connectivity)] = NO_CHANGE
    return out


def apply_min_mapping_unit(classes: np.ndarray, min_pixels: int, connectivity: int = 8) -> np.ndarray:
    """Drop man-made patches (classes 1-3 together) smaller than ``min_pixels``, globally."""
    return drop_small_patches(classes, MAN_MADE_CLASSES, min_pixels, connectivity)
