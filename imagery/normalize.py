"""Relative radiometric normalisation of the after image onto the before image.

Method (Canty & Nielsen's IR-MAD used as a no-change detector, then per-band regression):

1. Iteratively re-weighted MAD: a weighted canonical correlation analysis between the before
   and after bands; the MAD variates (differences of canonical variates) of unchanged pixels
   are independent Gaussians with variance ``2 (1 - rho_i)``, so their standardised sum of
   squares is chi-square with ``p`` degrees of freedom. Each pixel's weight for the next
   iteration is its no-change probability ``P(chi2_p > z)``. Stops when the canonical
   correlations move less than ``tol`` or after ``max_iter`` iterations.
2. Pixels with no-change probability above ``min_no_change_prob`` are the invariant set; on
   them, per band, an orthogonal (total least squares) regression ``before = gain * after +
   offset`` gives the normalisation. Orthogonal regression treats both dates as noisy, so it
   is symmetric and does not shrink the gain like ordinary least squares would.

The sample is one C-contiguous (N, 2p) float32 matrix; each iteration is two fused numba passes
over it (weighted moments; standardised MADs to no-change probability) with float64 sums per
block of ``BLOCK_PX`` rows, added in block order, so the result does not depend on the thread
count and no (N, ...) temporary is made. The passes are single-threaded nogil kernels over ranges
of rows, run by a fit in a pool of one thread per core (numba's OpenMP threads spun between the
short passes: ~20 % of the fit's CPU) and by a tile on its own thread.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
from pydantic import BaseModel, Field

#: Rows per block of the moments pass (block sums added in block order, whatever the threads).
BLOCK_PX = 1 << 15
#: Blocks per task of the threaded passes: a few tasks per thread even out a busy machine.
TASK_BLOCKS = 4
#: Rows per task of the threaded row passes.
TASK_PX = TASK_BLOCKS * BLOCK_PX
#: Rows per chunk of the MAD passes: the chunk's columns (float64) and its MADs stay in L1 while
#: each variate is summed along the rows.
CHUNK_PX = 256
#: Histogram bins of the median selection (`_row_medians`).
MEDIAN_BINS = 1 << 16


class Normalization(BaseModel):
    """Per-band linear map ``after_normalised = gain * after + offset`` plus diagnostics."""

    gain: list[float] = Field(description="Per-band multiplicative coefficient.")
    offset: list[float] = Field(description="Per-band additive coefficient (reflectance units).")
    n_pixels: int = Field(description="Valid pixels in the fitting sample.")
    n_no_change: int = Field(description="Pixels with no-change probability above the cut.")
    iterations: int = Field(description="IR-MAD iterations run.")
    converged: bool = Field(description="Whether the canonical correlations converged.")
    canonical_correlations: list[float] = Field(description="Final IR-MAD canonical correlations.")
    band_correlations: list[float] = Field(
        description="Per-band weighted correlation before/after on the no-change set."
    )


def chi2_sf_even(z: np.ndarray, dof: int) -> np.ndarray:
    """Survival function of chi-square with an even number of degrees of freedom, closed form.

    ``P(X > z) = exp(-z/2) * sum_{k < dof/2} (z/2)^k / k!``; float32 in, float32 out.
    """
    if dof <= 0 or dof % 2:
        raise ValueError(f"chi2_sf_even: dof must be a positive even integer, got {dof}")
    h = np.maximum(np.asarray(z, dtype=np.float32), 0) * np.float32(0.5)
    term = np.ones_like(h)
    total = np.ones_like(h)
    for k in range(1, dof // 2):
        term = term * h / np.float32(k)
        total += term
    return (np.exp(-h) * total).astype(np.float32, copy=False)


def chi2_sf(z: np.ndarray, dof: int) -> np.ndarray:
    """Chi-square survival function: closed form for even dof, scipy otherwise."""
    if dof > 0 and dof % 2 == 0:
        return chi2_sf_even(z, dof)
    from scipy.special import gammaincc

    return gammaincc(dof / 2.0, np.maximum(z, 0) / 2.0).astype(np.float32)


def _valid_pairs(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(N, 2p) float32 matrix of the pixels valid in every band of both dates."""
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} differ in shape")
    p = before.shape[0]
    b = before.reshape(p, -1)
    a = after.reshape(p, -1)
    ok = np.all(np.isfinite(b), axis=0) & np.all(np.isfinite(a), axis=0)
    pick = slice(None) if ok.all() else ok  # a sample of valid pixels is taken whole
    xy = np.empty((int(ok.sum()), 2 * p), np.float32)
    for k in range(p):
        xy[:, k] = b[k, pick]
        xy[:, p + k] = a[k, pick]
    return xy


def _blocks(n: int) -> int:
    return (n + BLOCK_PX - 1) // BLOCK_PX


@numba.njit(cache=True, nogil=True)
def _block_moments(
    xy: np.ndarray,
    w: np.ndarray,
    centre: np.ndarray,
    first: int,
    end: int,
    sw: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """For blocks `first` .. `end` of the rows: sum of w, sum of w v and sum of w v v^T
    (v = row - centre), float64, into sw[blk], s1[blk] and s2[blk]."""
    n, m = xy.shape
    v = np.empty(m)
    for blk in range(first, end):
        a1 = np.zeros(m)
        a2 = np.zeros((m, m))
        aw = 0.0
        for i in range(blk * BLOCK_PX, min(n, (blk + 1) * BLOCK_PX)):
            wi = np.float64(w[i])
            aw += wi
            for j in range(m):
                v[j] = np.float64(xy[i, j]) - centre[j]
            for j in range(m):
                wv = wi * v[j]
                a1[j] += wv
                for k in range(m):  # the whole square: a loop the compiler vectorises
                    a2[j, k] += wv * v[k]
        sw[blk] = aw
        s1[blk] = a1
        s2[blk] = a2


def _weighted_moments(
    xy: np.ndarray, w: np.ndarray, pool: Executor | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """Sum of weights, weighted mean and weighted covariance of the rows, in one fused pass."""
    # shift by a rough centre so the sums of products stay well conditioned
    centre = xy[:: max(1, len(xy) // 4096)].mean(axis=0, dtype=np.float64)
    n, m = xy.shape
    nblk = _blocks(n)
    bsw, bs1, bs2 = np.zeros(nblk), np.zeros((nblk, m)), np.zeros((nblk, m, m))

    def task(b0: int, b1: int) -> None:
        _block_moments(xy, w, centre, b0, b1, bsw, bs1, bs2)

    _run(pool, task, _ranges(nblk, TASK_BLOCKS))
    sw = float(np.sum(bsw))
    s2 = bs2.sum(axis=0)
    s2 = 0.5 * (s2 + s2.T)
    mean_c = bs1.sum(axis=0) / max(sw, 1e-12)
    cov = s2 / max(sw, 1e-12) - np.outer(mean_c, mean_c)
    return sw, mean_c + centre, cov


def _ranges(n: int, step: int) -> list[tuple[int, int]]:
    """[0, n) cut into ranges of `step`."""
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _run(pool: Executor | None, task: Callable[[int, int], None], ranges: list[tuple[int, int]]) -> None:
    """task(lo, hi) for each range, in `pool`'s threads (the kernels release the GIL) or, without a
    pool, on this thread (tiles already run one per thread)."""
    if pool is None:
        for lo, hi in ranges:
            task(lo, hi)
    else:
        for _ in pool.map(lambda r: task(*r), ranges):
            pass


@contextmanager
def _threads() -> Iterator[Executor | None]:
    """A pool of one thread per core for the passes of a fit (none on one core)."""
    n = os.cpu_count() or 1
    if n == 1:
        yield None
        return
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="irmad") as pool:
        yield pool


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    """Symmetric inverse square root with an eigenvalue floor (rank-deficient samples)."""
    vals, vecs = np.linalg.eigh(0.5 * (c + c.T))
    floor = max(float(vals.max()), 1e-30) * 1e-8 + 1e-20
    return (vecs / np.sqrt(np.maximum(vals, floor))) @ vecs.T


def _cca(cov: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical correlations (ascending) and vectors A, B (p x p, columns) from a joint cov."""
    sxx, syy, sxy = cov[:p, :p], cov[p:, p:], cov[:p, p:]
    lxi = _inv_sqrt(sxx)
    lyi = _inv_sqrt(syy)
    k = lxi @ sxy @ lyi.T  # whitened cross-covariance (lxi, lyi symmetric)
    u, s, vt = np.linalg.svd(k)
    order = np.argsort(s)  # ascending: the first MAD variates carry the most change
    a = lxi.T @ u[:, order]
    b = lyi.T @ vt.T[:, order]
    # sign convention: positive correlation of each canonical variate with its own bands
    # (flipping a pair together keeps a^T Sxy b = rho >= 0)
    signs = np.sign(np.sum(sxx @ a, axis=0))
    signs[signs == 0] = 1
    a = a * signs
    b = b * signs
    return np.clip(s[order], 0.0, 1.0 - 1e-6), a, b


class IrMad(BaseModel):
    """Result of IR-MAD on a pixel sample: what is needed to score any other pixel."""

    mean_before: list[float]
    mean_after: list[float]
    a: list[list[float]]  # p x p, columns are canonical vectors of the before bands
    b: list[list[float]]  # p x p, columns are canonical vectors of the after bands
    mad_std: list[float]  # standard deviation of each MAD variate on the no-change pixels
    rho: list[float]
    iterations: int
    converged: bool

    def for_after_mapped(self, gain: list[float], offset: list[float]) -> IrMad:
        """The same fit for after bands mapped to ``gain * after + offset`` (gains > 0): CCA and the
        MAD variates are invariant to a positive linear map of each band, so only the after means
        and the after canonical vectors (``b`` rows divided by the gain) change."""
        g = np.asarray(gain, np.float64)
        return self.model_copy(
            update={
                "mean_after": (g * np.asarray(self.mean_after) + np.asarray(offset)).tolist(),
                "b": (np.asarray(self.b) / g[:, None]).tolist(),
            }
        )


@dataclass(frozen=True)
class NoChangeFit:
    """An IR-MAD fit and the no-change probability of each valid pixel of its sample (in the
    order `_valid_pairs` takes them), for a second fit on the same sample to start from."""

    model: IrMad
    probability: np.ndarray


def irmad_fit(xy: np.ndarray, *, max_iter: int = 20, tol: float = 1e-4) -> tuple[IrMad, np.ndarray]:
    """Run IR-MAD on an (N, 2p) float32 sample; returns the model and no-change probabilities."""
    n, m = xy.shape
    p = m // 2
    w = np.ones(n, np.float32)
    rho_prev = np.full(p, -1.0)
    converged = False
    it = 0
    mean = np.zeros(m)
    a = b = np.eye(p)
    rho = np.zeros(p)
    mad_var = np.ones(p)
    with _threads() as pool:
        for it in range(1, max_iter + 1):  # noqa: B007
            _, mean, cov = _weighted_moments(xy, w, pool)
            rho, a, b = _cca(cov, p)
            mad_var = _robust_mad_var(xy, mean, a, b, rho, pool)
            w = irmad_probability(xy, mean, a, b, mad_var, pool)
            if np.max(np.abs(rho - rho_prev)) < tol:
                converged = True
                break
            rho_prev = rho
    model = IrMad(
        mean_before=mean[:p].tolist(),
        mean_after=mean[p:].tolist(),
        a=a.tolist(),
        b=b.tolist(),
        mad_std=np.sqrt(mad_var).tolist(),
        rho=rho.tolist(),
        iterations=it,
        converged=converged,
    )
    return model, w


def _robust_mad_var(
    xy: np.ndarray,
    mean: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    rho: np.ndarray,
    pool: Executor | None = None,
    max_sample: int = 1 << 20,
) -> np.ndarray:
    """Robust variance of each MAD variate: (1.4826 x median absolute deviation)^2.

    The textbook IR-MAD uses ``2 (1 - rho)``, the variance under the current weights; on real
    scenes, whose MAD tails are heavier than Gaussian, weighting by the no-change probability
    shrinks that variance at every iteration and the weights collapse onto a few hundred
    pixels (seen on every OSCD city). A median-based scale of the unweighted sample is stable,
    equals ``2 (1 - rho)`` for Gaussian no-change data and ignores a minority of changed pixels.
    """
    sub = xy[:: max(1, len(xy) // max_sample)]
    t = np.concatenate([a, -b], axis=0).astype(np.float64)
    mads = _mads(sub, t, np.asarray(mean, np.float64) @ t, pool)
    med = _row_medians(mads, pool)
    mads -= med[:, None].astype(np.float32)
    np.abs(mads, out=mads)
    scale = 1.4826 * _row_medians(mads, pool)
    floor = 1e-6 * np.maximum(2.0 * (1.0 - rho), 1e-12)
    return np.maximum(scale.astype(np.float64) ** 2, floor)


@numba.njit(cache=True, inline="always")
def _bin(v: float, lo: float, scale: float) -> int:  # pragma: no cover - compiled
    """Histogram bin of v: 0 below lo, 1..MEDIAN_BINS inside, MEDIAN_BINS + 1 at or above the top."""
    return int(min(max((np.float64(v) - lo) * scale + 1.0, 0.0), MEDIAN_BINS + 1.0))


@numba.njit(cache=True)
def _middle(x: np.ndarray, lo: float, hi: float, k1: int, k2: int, limit: int) -> float:  # pragma: no cover
    """Mean of the k1-th and k2-th smallest values of x, NaN when more than `limit` values share
    their histogram bins on [lo, hi] (then a wider range is needed); only those values are sorted."""
    scale = MEDIAN_BINS / (hi - lo)
    hist = np.zeros(MEDIAN_BINS + 2, np.int64)
    for i in range(len(x)):
        hist[_bin(x[i], lo, scale)] += 1
    below = 0
    b1 = 0
    while below + hist[b1] <= k1:
        below += hist[b1]
        b1 += 1
    b2 = b1
    upto = below + hist[b1]
    while upto <= k2:
        b2 += 1
        upto += hist[b2]
    if upto - below > limit:
        return np.nan
    buf = np.empty(upto - below, np.float32)
    j = 0
    for i in range(len(x)):
        b = _bin(x[i], lo, scale)
        if b1 <= b <= b2:
            buf[j] = x[i]
            j += 1
    buf.sort()
    return 0.5 * (np.float64(buf[k1 - below]) + np.float64(buf[k2 - below]))


@numba.njit(cache=True, nogil=True)
def _row_median(x: np.ndarray) -> float:  # pragma: no cover - compiled
    """Exact median of a float32 row (the mean of the middle two for even n, as np.median) in three
    passes: a histogram over the range where a subsample puts the median (the whole range if that
    misses), then a sort of only the values in the middle ranks' bins."""
    n = len(x)
    k1 = (n - 1) // 2
    k2 = n // 2
    sub = np.sort(x[:: max(1, n // 4096)])
    ns = len(sub)
    lo = np.float64(sub[ns * 2 // 5])
    hi = np.float64(sub[min(ns - 1, ns * 3 // 5)])
    m = _middle(x, lo, hi, k1, k2, max(n // 16, 1024)) if lo < hi else np.nan
    if np.isnan(m):
        lo = np.float64(x.min())
        hi = np.float64(x.max())
        m = lo if lo == hi else _middle(x, lo, hi, k1, k2, n)
    return m


def _row_medians(rows: np.ndarray, pool: Executor | None = None) -> np.ndarray:
    """Exact median of each row of a (p, n) float32 array (`_row_median`), rows in `pool`'s threads."""
    out = np.empty(rows.shape[0])

    def task(r0: int, r1: int) -> None:
        for r in range(r0, r1):
            out[r] = _row_median(rows[r])

    _run(pool, task, _ranges(len(out), 1))
    return out


def irmad_chi2(
    xy: np.ndarray,
    mean: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    mad_var: np.ndarray,
    pool: Executor | None = None,
) -> np.ndarray:
    """Standardised MAD chi-square statistic of each row of an (N, 2p) matrix (float32); rows in
    `pool`'s threads, else on the calling thread."""
    t, shift = _mad_transform(mean, a, b, mad_var)
    return _mad_chi2(np.ascontiguousarray(xy, dtype=np.float32), t, shift, 0, pool)


def irmad_probability(
    xy: np.ndarray,
    mean: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    mad_var: np.ndarray,
    pool: Executor | None = None,
) -> np.ndarray:
    """No-change probability of each row: chi-square survival of its standardised MADs."""
    dof = a.shape[0]
    if dof % 2:
        return chi2_sf(irmad_chi2(xy, mean, a, b, mad_var, pool), dof)
    t, shift = _mad_transform(mean, a, b, mad_var)
    return _mad_chi2(np.ascontiguousarray(xy, dtype=np.float32), t, shift, dof, pool)


def _mad_transform(
    mean: np.ndarray, a: np.ndarray, b: np.ndarray, mad_var: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(2p, p) matrix and (p,) shift mapping a row to its standardised MADs: ``row @ t - shift``."""
    # MAD = A^T (x - mx) - B^T (y - my) = [A; -B]^T (xy - mean), scaled by 1/sigma
    t = np.concatenate([a, -b], axis=0) / np.sqrt(mad_var)[None, :]
    return np.ascontiguousarray(t, dtype=np.float64), np.asarray(mean, np.float64) @ t


@numba.njit(cache=True, inline="always")
def _chunk_columns(xy: np.ndarray, i0: int, count: int, x: np.ndarray) -> None:  # pragma: no cover
    """Rows i0 .. i0 + count of `xy` as float64 columns: x[j, r] = xy[i0 + r, j]."""
    for r in range(count):
        for j in range(xy.shape[1]):
            x[j, r] = np.float64(xy[i0 + r, j])


@numba.njit(cache=True, inline="always")
def _chunk_mad(
    x: np.ndarray, count: int, t: np.ndarray, shift: np.ndarray, c: int, d: np.ndarray
) -> None:  # pragma: no cover - compiled
    """d[r] = -shift[c] + sum over j (in order) of x[j, r] t[j, c]: MAD variate c of a chunk's rows,
    summed along the rows (vectorised) in the same order as row by row."""
    for r in range(count):
        d[r] = -shift[c]
    for j in range(x.shape[0]):
        tj = t[j, c]
        xj = x[j]
        for r in range(count):
            d[r] += xj[r] * tj


@numba.njit(cache=True, nogil=True)
def _mads_rows(
    xy: np.ndarray, t: np.ndarray, shift: np.ndarray, lo: int, hi: int, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """out[:, lo:hi] = MAD variates ``row @ t - shift`` of rows lo .. hi (lo a multiple of CHUNK_PX)."""
    m = xy.shape[1]
    x = np.empty((m, CHUNK_PX))
    d = np.empty(CHUNK_PX)
    for i0 in range(lo, hi, CHUNK_PX):
        count = min(CHUNK_PX, hi - i0)
        _chunk_columns(xy, i0, count, x)
        for c in range(t.shape[1]):
            _chunk_mad(x, count, t, shift, c, d)
            for r in range(count):
                out[c, i0 + r] = d[r]


def _mads(xy: np.ndarray, t: np.ndarray, shift: np.ndarray, pool: Executor | None = None) -> np.ndarray:
    """(p, n) float32 MAD variates ``row @ t - shift`` of the n rows, one contiguous row per variate."""
    out = np.empty((t.shape[1], len(xy)), np.float32)
    _run(pool, lambda lo, hi: _mads_rows(xy, t, shift, lo, hi, out), _ranges(len(xy), TASK_PX))
    return out


@numba.njit(cache=True, nogil=True)
def _mad_chi2_rows(
    xy: np.ndarray, t: np.ndarray, shift: np.ndarray, sf_dof: int, lo: int, hi: int, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """`_mad_chi2` of rows lo .. hi (lo a multiple of CHUNK_PX) into out[lo:hi]."""
    m = xy.shape[1]
    x = np.empty((m, CHUNK_PX))
    d = np.empty(CHUNK_PX)
    z = np.empty(CHUNK_PX)
    for i0 in range(lo, hi, CHUNK_PX):
        count = min(CHUNK_PX, hi - i0)
        _chunk_columns(xy, i0, count, x)
        z[:] = 0.0
        for c in range(t.shape[1]):
            _chunk_mad(x, count, t, shift, c, d)
            for r in range(count):
                z[r] += d[r] * d[r]
        for r in range(count):
            if sf_dof == 0:
                out[i0 + r] = z[r]
            else:
                h = 0.5 * z[r]
                term = 1.0
                total = 1.0
                for k in range(1, sf_dof // 2):
                    term = term * h / k
                    total += term
                out[i0 + r] = np.exp(-h) * total


def _mad_chi2(
    xy: np.ndarray, t: np.ndarray, shift: np.ndarray, sf_dof: int, pool: Executor | None = None
) -> np.ndarray:
    """Per row, the sum of squared standardised MADs (``sf_dof`` 0) or, for an even ``sf_dof``,
    its chi-square survival with that many degrees of freedom (see `chi2_sf_even`); float32."""
    out = np.empty(len(xy), np.float32)
    _run(pool, lambda lo, hi: _mad_chi2_rows(xy, t, shift, sf_dof, lo, hi, out), _ranges(len(xy), TASK_PX))
    return out


def _orthogonal_regression(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """Weighted total-least-squares fit ``y = gain * x + offset``; returns gain, offset, r."""
    sw = float(w.sum(dtype=np.float64))
    mx = float((w @ x) / sw)
    my = float((w @ y) / sw)
    dx = (x - mx).astype(np.float64)
    dy = (y - my).astype(np.float64)
    sxx = float(w @ (dx * dx)) / sw
    syy = float(w @ (dy * dy)) / sw
    sxy = float(w @ (dx * dy)) / sw
    r = sxy / math.sqrt(max(sxx * syy, 1e-30))
    spread = syy - sxx + math.sqrt((syy - sxx) ** 2 + 4 * sxy * sxy)
    gain = 1.0 if abs(sxy) < 1e-15 else spread / (2 * sxy)
    return gain, my - gain * mx, r


def fit_normalization(before: np.ndarray, after: np.ndarray) -> Normalization:
    """`fit_normalization_no_change` with its default settings, without the IR-MAD fit."""
    return fit_normalization_no_change(before, after)[0]


def fit_normalization_no_change(
    before: np.ndarray,
    after: np.ndarray,
    *,
    max_iter: int = 20,
    tol: float = 1e-4,
    min_no_change_prob: float = 0.5,
    min_pixels: int = 100,
    max_gain_change: float = 0.5,
) -> tuple[Normalization, NoChangeFit | None]:
    """Fit the per-band normalisation of ``after`` onto ``before`` from no-change pixels; also its
    IR-MAD fit mapped onto the normalised after bands (None when IR-MAD did not run), which is the
    change model's IR-MAD on the normalised sample (`change.fit_change_model`).

    ``before``/``after``: (p, ...) float arrays, NaN = invalid; any sample of the scene (the
    pipeline concatenates windows or subsamples). With fewer than ``min_pixels`` invariant
    pixels, or a gain further than ``max_gain_change`` from 1 in any band, it falls back to
    the identity for that band rather than distorting the image.
    """
    p = before.shape[0]
    xy = _valid_pairs(before, after)
    n = len(xy)
    identity = Normalization(
        gain=[1.0] * p,
        offset=[0.0] * p,
        n_pixels=n,
        n_no_change=0,
        iterations=0,
        converged=False,
        canonical_correlations=[],
        band_correlations=[],
    )
    if n < max(min_pixels, 4 * p):
        return identity, None
    model, prob = irmad_fit(xy, max_iter=max_iter, tol=tol)
    keep = prob > min_no_change_prob
    n_nc = int(keep.sum())
    if n_nc < min_pixels:
        update = {"iterations": model.iterations, "canonical_correlations": model.rho}
        return identity.model_copy(update=update), NoChangeFit(model, prob)
    sub = xy[keep]
    w = prob[keep]
    gains, offsets, corrs = [], [], []
    for k in range(p):
        gain, offset, r = _orthogonal_regression(sub[:, p + k], sub[:, k], w)
        if not np.isfinite(gain) or abs(gain - 1.0) > max_gain_change:
            gain, offset = 1.0, 0.0
        gains.append(float(gain))
        offsets.append(float(offset))
        corrs.append(float(r))
    norm = Normalization(
        gain=gains,
        offset=offsets,
        n_pixels=n,
        n_no_change=n_nc,
        iterations=model.iterations,
        converged=model.converged,
        canonical_correlations=model.rho,
        band_correlations=corrs,
    )
    mapped = NoChangeFit(model.for_after_mapped(gains, offsets), prob) if min(gains) > 0 else None
    return norm, mapped


def apply_normalization(after: np.ndarray, norm: Normalization) -> np.ndarray:
    """``gain * after + offset`` per band (float32; NaN stays NaN). Pure per pixel: no seams."""
    p = after.shape[0]
    if len(norm.gain) != p:
        raise ValueError(f"normalisation has {len(norm.gain)} bands, image has {p}")
    shape = (p,) + (1,) * (after.ndim - 1)
    g = np.asarray(norm.gain, np.float32).reshape(shape)
    o = np.asarray(norm.offset, np.float32).reshape(shape)
    out = after.astype(np.float32, copy=True)
    out *= g
    out += o
    return out
