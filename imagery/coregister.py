"""Sub-pixel co-registration of a target image onto a reference grid.

Tie-point grid of windows matched by phase correlation (whitened cross-power spectrum, integer
peak, re-extraction at the integer offset, then an upsampled-DFT sub-pixel peak), reliability
filtering (valid fraction, peak significance, maximum shift), a robust affine/translation fit and
a fused numba resampler. Pure numpy in, numpy/pydantic out; no I/O.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numba
import numpy as np
import numpy.typing as npt
import scipy.fft
from numba import types
from numba.extending import intrinsic
from pydantic import BaseModel, Field
from scipy.stats import f as f_dist

from imagery.config import CoregParams

F32 = npt.NDArray[np.float32]
C64 = npt.NDArray[np.complex64]
I64 = npt.NDArray[np.int64]
Method = Literal["local-affine", "global", "none"]

_BATCH = 32  # windows per FFT batch: bounds memory to ~ 32 * 3 * window^2 * 8 bytes


class ShiftModel(BaseModel):
    """Shift of the target relative to the reference, in reference-grid pixels (JSON-serialisable).

    shift(r, c) = (dx_px, dy_px) + gradient @ (clip(r) - centre_row, clip(c) - centre_col); the
    coordinates are clipped to `extent` (the tie-point hull box) so the affine never extrapolates.
    """

    dx_px: float = Field(default=0.0, description="Shift east (columns) at `centre`, reference pixels.")
    dy_px: float = Field(default=0.0, description="Shift south (rows) at `centre`, reference pixels.")
    n_tie_points: int = Field(default=0, ge=0, description="Tie points kept by the fit.")
    n_rejected: int = Field(default=0, ge=0, description="Matched windows rejected (unreliable/outlier).")
    rmse_px: float = Field(default=0.0, ge=0, description="RMS of kept tie points about the model.")
    method: Method = "none"
    centre: tuple[float, float] = Field(default=(0.0, 0.0), description="(row, col) of dx_px/dy_px.")
    gradient: tuple[float, float, float, float] = Field(
        default=(0.0, 0.0, 0.0, 0.0), description="d(dx)/drow, d(dx)/dcol, d(dy)/drow, d(dy)/dcol."
    )
    extent: tuple[float, float, float, float] = Field(
        default=(0.0, 0.0, 0.0, 0.0), description="row_min, row_max, col_min, col_max clip box."
    )
    n_windows: int = Field(default=0, ge=0, description="Windows examined on the tie-point grid.")

    def coefficients(self) -> npt.NDArray[np.float64]:
        """The model as the 10 scalars the resampling kernel reads."""
        return np.array(
            [self.dx_px, self.dy_px, *self.centre, *self.gradient, *self.extent], dtype=np.float64
        )

    def shift_at(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dx, dy) at the given grid pixel centres (global run-grid coordinates)."""
        r = np.asarray(rows, dtype=np.float64)
        c = np.asarray(cols, dtype=np.float64)
        if self.method != "local-affine":
            shape = np.broadcast_shapes(r.shape, c.shape)
            return np.full(shape, self.dx_px), np.full(shape, self.dy_px)
        r0, r1, c0, c1 = self.extent
        dr = np.clip(r, r0, r1) - self.centre[0]
        dc = np.clip(c, c0, c1) - self.centre[1]
        gxr, gxc, gyr, gyc = self.gradient
        return self.dx_px + gxr * dr + gxc * dc, self.dy_px + gyr * dr + gyc * dc


@dataclass(frozen=True)
class TiePoints:
    """Per-window matches in global grid coordinates (window centres) and their quality."""

    rows: npt.NDArray[np.float64]
    cols: npt.NDArray[np.float64]
    dx: npt.NDArray[np.float64]
    dy: npt.NDArray[np.float64]
    peak: npt.NDArray[np.float64]  # normalised phase-correlation peak height, 0..1
    psr: npt.NDArray[np.float64]  # peak-to-sidelobe ratio of the integer surface
    reliable: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class MatchOptions:
    """Tuning knobs of the matcher that are not run settings (defaults measured on OSCD)."""

    max_invalid_frac: float = 0.1  # skip windows with more NaN than this in either image
    min_psr: float = 9.0  # peak-to-sidelobe ratio of the integer surface (noise max is ~4.5)
    min_peak: float = 0.03  # normalised peak height (coherent fraction of the spectrum)
    max_freq: float = 0.35  # cycles/px kept in the cross-power; higher ones carry resampling bias
    outlier_floor_px: float = 0.2  # outlier cut never tighter than this (px)


# --------------------------------------------------------------------------- window matching


def _hann(n: int) -> F32:
    """2-D separable Hann taper: suppresses the edge cross that biases the peak towards zero."""
    w = np.hanning(n + 2)[1:-1].astype(np.float32)
    return np.outer(w, w)


def _prepare(stack: F32, taper: F32) -> tuple[F32, F32]:
    """De-mean each window over its valid pixels, zero invalid ones, taper (in place: `stack` is
    the caller's scratch); also the valid fraction."""
    size = stack.shape[1] * stack.shape[2]
    valid = np.isfinite(stack)
    nvalid = np.count_nonzero(valid, axis=(1, 2)).astype(np.float32)  # exact: counts < 2**24
    whole = bool((nvalid == size).all())
    if not whole:
        np.copyto(stack, np.float32(0), where=~valid)
    mean = stack.sum(axis=(1, 2), dtype=np.float32) / np.maximum(nvalid, 1)
    if whole:
        stack -= mean[:, None, None]
    else:
        np.subtract(stack, mean[:, None, None], out=stack, where=valid)  # invalid pixels stay 0
    stack *= taper
    return stack, (nvalid / np.float32(size)).astype(np.float32)


def _freq_weight(n: int, max_freq: float) -> F32:
    """Radial low-pass on the rfft grid: 1 below 0.7 * max_freq, cosine roll-off to 0 at max_freq.

    Interpolated data (a reprojected or resampled image) have wrong phases near Nyquist that pull
    the whitened peak towards whole pixels; dropping them removes that pixel-locking bias.
    """
    fu = scipy.fft.fftfreq(n)[:, None]
    fv = scipy.fft.rfftfreq(n)[None, :]
    f = np.hypot(fu, fv)
    lo = 0.7 * max_freq
    ramp = np.clip((f - lo) / max(max_freq - lo, 1e-9), 0.0, 1.0)
    return (0.5 * (1 + np.cos(np.pi * ramp))).astype(np.float32)


@dataclass(frozen=True)
class Passband:
    """The rfft2 frequencies a low-pass weight keeps: its non-zero rows and leading columns. The
    sub-pixel DFT sums over these only (the others add exact zeros: same result, half the work)."""

    n: int
    rows: I64
    cols: int

    @classmethod
    def of(cls, weight: F32) -> Passband:
        """The support of `weight` (an (n, n // 2 + 1) rfft2 grid)."""
        return cls(
            weight.shape[0],
            np.flatnonzero(weight.any(axis=1)),
            int(np.flatnonzero(weight.any(axis=0))[-1]) + 1,
        )

    def take(self, cp: C64) -> C64:
        """The band's part of a stack of rfft2 spectra."""
        return np.ascontiguousarray(cp[:, self.rows, : self.cols])


@functools.lru_cache(maxsize=8)
def _filters(n: int, max_freq: float) -> tuple[F32, F32, Passband, float]:
    """What matching n px windows needs besides the windows, made once per size (read-only): the
    taper, the low-pass weight, its pass band and the correlation norm of a perfect match."""
    taper = _hann(n)
    weight = _freq_weight(n, max_freq)
    full = weight.copy()
    full[:, 1 : (n + 1) // 2] *= 2  # Hermitian half: interior columns count twice
    taper.flags.writeable = weight.flags.writeable = False
    return taper, weight, Passband.of(weight), float(full.sum())


def _cross_power(ref_f: C64, tgt: F32, weight: F32) -> C64:
    """Whitened, low-passed cross-power spectrum (target x conj(reference)); peaks at +shift."""
    tgt_f = scipy.fft.rfft2(tgt, workers=-1)
    _whiten(tgt_f, ref_f, weight)
    return tgt_f


def _fma_typer(typingctx, x, y, z):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """x * y + z rounded once (float32 or float64): the fused multiply-add of numpy's SIMD loops."""
    if not (isinstance(x, types.Float) and x == y == z):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.fma(*args)

    return x(x, y, z), codegen


_fma = cast(Callable[[Any, Any, Any], Any], intrinsic(_fma_typer))


@numba.njit(cache=True, nogil=True)
def _whiten(cp: np.ndarray, ref_f: np.ndarray, weight: np.ndarray) -> None:  # pragma: no cover - compiled
    """``cp = conj(ref_f) * cp``, divided by its magnitude (floored at 1e-12 of the window's largest,
    so an all-invalid window gives a zero spectrum, not NaN) and multiplied by `weight`, in place.

    Two passes per window instead of numpy's five temporaries, with the float32 arithmetic of numpy's
    AVX2/AVX-512 loops bit for bit: ``x * y`` as ``(fma(xr, yr, -(xi yi)), fma(xr, yi, xi yr))``
    (numpy's temporary elision computed the product of the former code with the conjugate as x),
    |z| as ``max * sqrt(fma(r, r, 1))`` with r = min / max, the division by a real as Smith's complex
    division. Bit for bit on AVX-512 machines like this one (measured); tests/test_coregister.py
    checks it against float64, which holds on any machine."""
    nk, nu, nv = cp.shape
    zero = np.float32(0.0)
    one = np.float32(1.0)
    mag = np.empty((nu, nv), np.float32)
    for k in range(nk):
        top = zero
        for u in range(nu):
            for v in range(nv):
                ar, ai = cp[k, u, v].real, cp[k, u, v].imag
                br, bi = ref_f[k, u, v].real, -ref_f[k, u, v].imag
                cr = _fma(br, ar, -(bi * ai))
                ci = _fma(br, ai, bi * ar)
                hi = max(abs(cr), abs(ci))
                lo = min(abs(cr), abs(ci))
                if hi == zero:
                    m = zero
                else:
                    r = lo / hi
                    m = np.float32(np.sqrt(_fma(r, r, one))) * hi
                mag[u, v] = m
                top = max(top, m)
                cp[k, u, v] = complex(cr, ci)
        eps = max(np.float32(1e-12) * top, np.float32(1e-30))
        for u in range(nu):
            for v in range(nv):
                den = max(mag[u, v], eps)
                cr, ci = cp[k, u, v].real, cp[k, u, v].imag
                rat = zero / den
                scl = one / (den + zero * rat)
                qr = (cr + ci * rat) * scl
                qi = (ci - cr * rat) * scl
                w = weight[u, v]
                cp[k, u, v] = complex(_fma(qr, w, -(qi * zero)), _fma(qr, zero, qi * w))


def _integer_peak(cp: C64, n: int) -> tuple[I64, I64, npt.NDArray[np.float64]]:
    """Integer peak (row, col shift, wrapped to +-n/2) and peak-to-sidelobe ratio per surface."""
    surf = scipy.fft.irfft2(cp, s=(n, n), workers=-1)
    flat = surf.reshape(len(surf), -1)
    idx = flat.argmax(axis=1)
    pr, pc = np.divmod(idx, n)
    peak = flat[np.arange(len(flat)), idx].astype(np.float64)
    # Side-lobe statistics excluding a 5x5 neighbourhood of the peak.
    for k in range(len(surf)):
        rr = (pr[k] + np.arange(-2, 3)) % n
        cc = (pc[k] + np.arange(-2, 3)) % n
        surf[k][np.ix_(rr, cc)] = np.nan
    mu = np.nanmean(flat, axis=1)
    sd = np.nanstd(flat, axis=1)
    psr = (peak - mu) / np.maximum(sd, 1e-12)
    shift_r = np.where(pr >= n // 2, pr - n, pr).astype(np.int64)
    shift_c = np.where(pc >= n // 2, pc - n, pc).astype(np.int64)
    return shift_r, shift_c, psr


def _dft_kernels(
    band: Passband, centre_r: np.ndarray, centre_c: np.ndarray, half: float, m: int
) -> tuple[C64, C64, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Matrix-DFT kernels that evaluate the correlation surface on an m x m sub-pixel grid, over
    the frequencies of `band` only (the cross-power is zero at all others)."""
    n = band.n
    offs = np.linspace(-half, half, m)
    ys = centre_r[:, None] + offs[None, :]  # (k, m)
    xs = centre_c[:, None] + offs[None, :]
    fu = scipy.fft.fftfreq(n, d=1.0 / n)[band.rows]  # signed row frequencies
    fv = np.arange(n // 2 + 1, dtype=np.float64)  # rfft column frequencies
    wv = np.full(fv.shape, 2.0)
    wv[0] = 1.0
    if n % 2 == 0:
        wv[-1] = 1.0
    fv, wv = fv[: band.cols], wv[: band.cols]
    ey = np.exp(2j * np.pi * ys[:, :, None] * fu[None, None, :] / n).astype(np.complex64)
    ex = (wv[None, :, None] * np.exp(2j * np.pi * fv[None, :, None] * xs[:, None, :] / n)).astype(
        np.complex64
    )
    return ey, ex, ys, xs


@numba.njit(cache=True, nogil=True)
def _matrix_dft(cp: np.ndarray, ey: np.ndarray, ex: np.ndarray) -> np.ndarray:
    """Re(ey[k] @ cp[k] @ ex[k]) per window: the correlation surface on a sub-pixel grid.

    A numba loop, not BLAS: these products are tiny and threaded BLAS thrashes on a busy host; on
    the calling thread (tiles are matched one per thread; numba's OpenMP threads spun between the
    short calls, ten times the work's CPU).
    """
    nk, nu, nv = cp.shape
    m = ey.shape[1]
    surf = np.empty((nk, m, m), np.float32)
    for k in range(nk):
        t = np.zeros((m, nv), np.complex64)
        for a in range(m):
            for u in range(nu):
                e = ey[k, a, u]
                for v in range(nv):
                    t[a, v] += e * cp[k, u, v]
        for a in range(m):
            for b in range(m):
                acc = np.complex64(0)
                for v in range(nv):
                    acc += t[a, v] * ex[k, v, b]
                surf[k, a, b] = acc.real
    return surf


def _subpixel_peak(
    cp: C64, band: Passband, centre_r: np.ndarray, centre_c: np.ndarray, half: float, m: int, norm: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Locate the correlation maximum near (centre_r, centre_c) on an m x m grid of +-half px;
    `cp` holds the cross-power on `band`'s frequencies only (`Passband.of`)."""
    ey, ex, ys, xs = _dft_kernels(band, centre_r, centre_c, half, m)
    surf = _matrix_dft(cp, ey, ex) / np.float32(norm)
    flat = surf.reshape(len(surf), -1)
    idx = flat.argmax(axis=1)
    ir, ic = np.divmod(idx, m)
    k = np.arange(len(surf))
    step = 2.0 * half / (m - 1)
    fr = _parabola(surf, k, ir, ic, axis=0, m=m)
    fc = _parabola(surf, k, ir, ic, axis=1, m=m)
    return ys[k, ir] + fr * step, xs[k, ic] + fc * step, flat[k, idx].astype(np.float64)


def _parabola(
    surf: np.ndarray, k: np.ndarray, ir: np.ndarray, ic: np.ndarray, axis: int, m: int
) -> npt.NDArray[np.float64]:
    """Vertex offset (grid steps, within +-0.5) of a parabola through the peak and neighbours."""
    if axis == 0:
        lo = surf[k, np.clip(ir - 1, 0, m - 1), ic]
        hi = surf[k, np.clip(ir + 1, 0, m - 1), ic]
        edge = (ir == 0) | (ir == m - 1)
    else:
        lo = surf[k, ir, np.clip(ic - 1, 0, m - 1)]
        hi = surf[k, ir, np.clip(ic + 1, 0, m - 1)]
        edge = (ic == 0) | (ic == m - 1)
    mid = surf[k, ir, ic]
    den = lo - 2 * mid + hi
    off = np.where(np.abs(den) > 1e-12, 0.5 * (lo - hi) / np.where(den == 0, 1, den), 0.0)
    return np.where(edge, 0.0, np.clip(off, -0.5, 0.5)).astype(np.float64)


def _extract(img: F32, tops: I64, lefts: I64, n: int) -> F32:
    """Stack of n x n windows with the given top-left corners (all inside the image)."""
    out = np.empty((len(tops), n, n), dtype=np.float32)
    for k, (t, left) in enumerate(zip(tops, lefts, strict=True)):
        out[k] = img[t : t + n, left : left + n]
    return out


def _window_grid(shape: tuple[int, int], n: int, step: int, margin: int) -> tuple[I64, I64]:
    """Top-left corners of a centred grid of n x n windows keeping `margin` px from the edges."""
    axes = []
    for size in shape:
        span = size - n - 2 * margin
        if span < 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        count = span // step + 1
        start = margin + (span - (count - 1) * step) // 2
        axes.append(start + step * np.arange(count, dtype=np.int64))
    tops, lefts = np.meshgrid(axes[0], axes[1], indexing="ij")
    return tops.ravel(), lefts.ravel()


def _match_batch(
    ref: F32,
    tgt: F32,
    tops: I64,
    lefts: I64,
    n: int,
    margin: int,
    opts: MatchOptions,
) -> tuple[np.ndarray, ...]:
    """Match one batch of windows: (dy, dx, peak, psr, ok) per window."""
    taper, weight, band, norm = _filters(n, opts.max_freq)
    ref_w, ref_frac = _prepare(_extract(ref, tops, lefts, n), taper)
    ref_f = scipy.fft.rfft2(ref_w, workers=-1)
    tgt_w, tgt_frac = _prepare(_extract(tgt, tops, lefts, n), taper)
    cp = _cross_power(ref_f, tgt_w, weight)
    ir, ic, psr = _integer_peak(cp, n)
    # Re-extract the target at the integer offset so the sub-pixel residual sees full overlap.
    ir = np.clip(ir, -margin, margin)
    ic = np.clip(ic, -margin, margin)
    moved = (ir != 0) | (ic != 0)
    if moved.any():
        tgt_m, frac_m = _prepare(_extract(tgt, tops[moved] + ir[moved], lefts[moved] + ic[moved], n), taper)
        cp[moved] = _cross_power(ref_f[moved], tgt_m, weight)
        tgt_frac[moved] = frac_m
    cp = band.take(cp)
    zeros = np.zeros(len(tops))
    r1, c1, _ = _subpixel_peak(cp, band, zeros, zeros, half=0.6, m=9, norm=norm)
    r2, c2, peak = _subpixel_peak(cp, band, r1, c1, half=0.1, m=7, norm=norm)
    ok = (ref_frac >= 1 - opts.max_invalid_frac) & (tgt_frac >= 1 - opts.max_invalid_frac)
    ok &= (np.abs(r2) < 0.75) & (np.abs(c2) < 0.75)
    return ir + r2, ic + c2, peak, psr, ok


@dataclass(frozen=True)
class WindowGrid:
    """Where `match_windows` matches: windows of `size` px at top-left corners (`tops`, `lefts`),
    each `margin` px (the largest shift) clear of the image edges."""

    size: int
    tops: I64
    lefts: I64
    margin: int

    @classmethod
    def on(cls, shape: tuple[int, ...], params: CoregParams) -> WindowGrid:
        """The centred grid of `params.window_px` windows every `params.grid_step_px` on an image of
        `shape` (windows shrunk for a small image; none when no window fits clear of the edges)."""
        n = _window_size(shape, params.window_px)
        margin = math.ceil(params.max_shift_px) + 1
        tops, lefts = _window_grid((shape[0], shape[1]), n, params.grid_step_px, margin)
        return cls(n, tops, lefts, margin)

    def extent(self, halo: int, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
        """(row0, row1, col0, col1) of the pixels the matching reads (the windows and their margin),
        grown by `halo` and clipped to `shape`; None without windows."""
        if not len(self.tops):
            return None
        reach = self.margin + halo
        r0, c0 = max(int(self.tops.min()) - reach, 0), max(int(self.lefts.min()) - reach, 0)
        r1 = min(int(self.tops.max()) + self.size + reach, shape[0])
        c1 = min(int(self.lefts.max()) + self.size + reach, shape[1])
        return r0, r1, c0, c1

    def moved(self, rows: int, cols: int) -> WindowGrid:
        """The same windows in an image whose first pixel is (`rows`, `cols`) of this one."""
        return WindowGrid(self.size, self.tops - rows, self.lefts - cols, self.margin)


def match_windows(
    reference: F32,
    target: F32,
    params: CoregParams,
    *,
    origin: tuple[int, int] = (0, 0),
    options: MatchOptions | None = None,
    grid: WindowGrid | None = None,
) -> TiePoints:
    """Phase-correlate a grid of windows: tie points in global coordinates, reliability flags.

    `grid` defaults to `WindowGrid.on(reference.shape)`; a caller that read only the part of a
    larger image its windows need (`WindowGrid.extent`) passes that image's grid `moved` there."""
    opts = options or MatchOptions()
    grid = grid or WindowGrid.on(reference.shape, params)
    n, margin, tops, lefts = grid.size, grid.margin, grid.tops, grid.lefts
    parts: list[tuple[np.ndarray, ...]] = []
    for s in range(0, len(tops), _BATCH):
        sl = slice(s, s + _BATCH)
        parts.append(_match_batch(reference, target, tops[sl], lefts[sl], n, margin, opts))
    if parts:
        dy, dx, peak, psr, ok = (np.concatenate(p) for p in zip(*parts, strict=True))
    else:
        dy = dx = peak = psr = np.empty(0)
        ok = np.empty(0, dtype=bool)
    shift_ok = np.hypot(dx, dy) <= params.max_shift_px
    reliable = ok & shift_ok & (psr >= opts.min_psr) & (peak >= opts.min_peak)
    half = (n - 1) / 2.0
    return TiePoints(
        rows=(tops + origin[0] + half).astype(np.float64),
        cols=(lefts + origin[1] + half).astype(np.float64),
        dx=dx.astype(np.float64),
        dy=dy.astype(np.float64),
        peak=peak.astype(np.float64),
        psr=psr.astype(np.float64),
        reliable=reliable.astype(bool),
    )


def _window_size(shape: tuple[int, ...], wanted: int) -> int:
    """Window edge: the configured size, shrunk (to an even size) when the image is smaller."""
    return int(min(wanted, (min(shape) // 2) * 2))


# --------------------------------------------------------------------------- model fitting


def _design(rows: np.ndarray, cols: np.ndarray, centre: tuple[float, float], affine: bool) -> np.ndarray:
    """Least-squares design matrix: [1] or [1, row - r0, col - c0]."""
    cols_ = [np.ones_like(rows)]
    if affine:
        cols_ += [rows - centre[0], cols - centre[1]]
    return np.stack(cols_, axis=1)


def _fit(tp: TiePoints, keep: np.ndarray, centre: tuple[float, float], affine: bool) -> np.ndarray:
    """Coefficients (2, p) of dx and dy on the kept tie points."""
    a = _design(tp.rows[keep], tp.cols[keep], centre, affine)
    sol, *_ = np.linalg.lstsq(a, np.stack([tp.dx[keep], tp.dy[keep]], axis=1), rcond=None)
    return np.asarray(sol.T)


def _residuals(tp: TiePoints, coef: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """Euclidean residual of every tie point about the model."""
    a = _design(tp.rows, tp.cols, centre, coef.shape[1] == 3)
    pred = a @ coef.T
    return np.asarray(np.hypot(tp.dx - pred[:, 0], tp.dy - pred[:, 1]))


def _robust_fit(
    tp: TiePoints, affine: bool, floor_px: float, iterations: int = 6
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Sigma-clipped fit starting from the median translation; returns (coef, kept mask, centre)."""
    keep = tp.reliable.copy()
    centre = (float(np.mean(tp.rows[keep])), float(np.mean(tp.cols[keep])))
    coef = np.array([[np.median(tp.dx[keep])], [np.median(tp.dy[keep])]])
    for _ in range(iterations):
        res = _residuals(tp, coef, centre)
        sigma = float(np.median(res[keep])) / 1.1774  # median of a 2-D normal norm is 1.1774 sigma
        new_keep = tp.reliable & (res <= max(3.5 * sigma, floor_px))
        if new_keep.sum() < (3 if affine else 1):
            break
        keep = new_keep
        coef = _fit(tp, keep, centre, affine)
    return coef, keep, centre


def _affine_supported(
    tp: TiePoints,
    keep: np.ndarray,
    coef_t: np.ndarray,
    coef_a: np.ndarray,
    centre: tuple[float, float],
    min_effect_px: float = 0.05,
) -> bool:
    """F-test (4 extra parameters, p < 0.001) that an affine beats a translation on kept points."""
    n = int(keep.sum())
    if n < 8 or np.ptp(tp.rows[keep]) == 0 or np.ptp(tp.cols[keep]) == 0:
        return False
    rss_t = float(np.sum(_residuals(tp, coef_t, centre)[keep] ** 2))
    rss_a = float(np.sum(_residuals(tp, coef_a, centre)[keep] ** 2))
    dof = 2 * n - 6
    if rss_a <= 0:
        return rss_t > 0
    f = ((rss_t - rss_a) / 4.0) / (rss_a / dof)
    if f <= f_dist.ppf(0.999, 4, dof):
        return False
    # Significant but negligible (< min_effect_px anywhere on the tie-point hull): keep it simple.
    r, c = tp.rows[keep] - centre[0], tp.cols[keep] - centre[1]
    effect = np.hypot(coef_a[0, 1] * r + coef_a[0, 2] * c, coef_a[1, 1] * r + coef_a[1, 2] * c)
    return bool(effect.max() >= min_effect_px)


def fit_model(tp: TiePoints, params: CoregParams, *, floor_px: float = 0.2) -> ShiftModel | None:
    """Robust translation or affine model from tie points, or None when too few are reliable."""
    n_matched = int(tp.reliable.sum())
    if n_matched < params.min_tie_points:
        return None
    coef_t, keep_t, centre = _robust_fit(tp, affine=False, floor_px=floor_px)
    coef, keep, method = coef_t, keep_t, "global"
    if keep_t.sum() >= max(params.min_tie_points, 8):
        coef_a, keep_a, _ = _robust_fit(tp, affine=True, floor_px=floor_px)
        coef_t2 = _fit(tp, keep_a, centre, affine=False)
        if _affine_supported(tp, keep_a, coef_t2, coef_a, centre):
            coef, keep, method = coef_a, keep_a, "local-affine"
    res = _residuals(tp, coef, centre)[keep]
    grad = (0.0, 0.0, 0.0, 0.0)
    if coef.shape[1] == 3:
        grad = (float(coef[0, 1]), float(coef[0, 2]), float(coef[1, 1]), float(coef[1, 2]))
    rk, ck = tp.rows[keep], tp.cols[keep]
    return ShiftModel(
        dx_px=float(coef[0, 0]),
        dy_px=float(coef[1, 0]),
        n_tie_points=int(keep.sum()),
        n_rejected=len(tp.dx) - int(keep.sum()),
        rmse_px=float(np.sqrt(np.mean(res**2))) if len(res) else 0.0,
        method=method,
        centre=centre,
        gradient=grad,
        extent=(float(rk.min()), float(rk.max()), float(ck.min()), float(ck.max())),
        n_windows=len(tp.dx),
    )


def _global_match(
    reference: F32,
    target: F32,
    params: CoregParams,
    origin: tuple[int, int],
    opts: MatchOptions,
) -> ShiftModel | None:
    """One large centred window (up to 1024 px, half may be invalid): the fallback translation."""
    margin = math.ceil(params.max_shift_px) + 1
    h, w = reference.shape
    n = int(min(1024, ((min(h, w) - 2 * margin) // 2) * 2))
    if n < 32:
        return None
    top, left = np.array([(h - n) // 2]), np.array([(w - n) // 2])
    dy, dx, peak, psr, _ = _match_batch(reference, target, top, left, n, margin, opts)
    valid = np.isfinite(reference[top[0] : top[0] + n, left[0] : left[0] + n])
    valid &= np.isfinite(target[top[0] : top[0] + n, left[0] : left[0] + n])
    ok = valid.mean() >= 0.5 and psr[0] >= opts.min_psr and peak[0] >= opts.min_peak
    if not ok or math.hypot(dx[0], dy[0]) > params.max_shift_px:
        return None
    c = (origin[0] + top[0] + (n - 1) / 2.0, origin[1] + left[0] + (n - 1) / 2.0)
    return ShiftModel(
        dx_px=float(dx[0]),
        dy_px=float(dy[0]),
        n_tie_points=1,
        method="global",
        centre=(float(c[0]), float(c[1])),
        extent=(float(c[0]), float(c[0]), float(c[1]), float(c[1])),
    )


def estimate_shift(
    reference: np.ndarray,
    target: np.ndarray,
    params: CoregParams,
    *,
    origin: tuple[int, int] = (0, 0),
    options: MatchOptions | None = None,
) -> ShiftModel:
    """Shift of `target` relative to `reference` (same grid, NaN = invalid) in global grid pixels.

    Tie-point grid -> robust affine/translation fit; fewer than `params.min_tie_points` reliable
    points -> one large global window; nothing reliable -> method "none" with zero shift.
    """
    ref = np.asarray(reference, dtype=np.float32)
    tgt = np.asarray(target, dtype=np.float32)
    if ref.ndim != 2 or ref.shape != tgt.shape:
        raise ValueError(f"reference {ref.shape} and target {tgt.shape}: need equal 2-D shapes")
    if not params.enabled:
        return ShiftModel()
    opts = options or MatchOptions()
    tp = match_windows(ref, tgt, params, origin=origin, options=opts)
    model = fit_model(tp, params, floor_px=opts.outlier_floor_px)
    if model is None:
        model = _global_match(ref, tgt, params, origin, opts)
        if model is not None:
            model = model.model_copy(update={"n_rejected": len(tp.dx), "n_windows": len(tp.dx)})
    return model or ShiftModel(n_rejected=int(tp.reliable.sum()), n_windows=len(tp.dx))


# --------------------------------------------------------------------------- resampling


@numba.njit(cache=True, nogil=True, inline="always")
def _keys(x: float) -> float:  # pragma: no cover - compiled
    """Keys' cubic convolution weight (a = -0.5) at distance x >= 0 from a tap."""
    a = -0.5
    if x <= 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


@numba.njit(cache=True)
def _taps(s: float, origin: int, size: int, order: int, idx: np.ndarray, w: np.ndarray) -> bool:
    """1-D kernel taps for global coordinate s into a window starting at `origin`; False if outside.

    Zero-weight taps point at the strongest tap, so a NaN there cannot leak in as NaN * 0.
    """
    i0 = math.floor(s)
    t = s - i0
    if order == 1:
        w[0] = 1.0 - t
        w[1] = t
        w[2] = 0.0
        w[3] = 0.0
        first = i0
    else:  # Keys cubic convolution, taps i0-1 .. i0+2
        for k in range(4):
            w[k] = _keys(abs(t - (k - 1)))
        first = i0 - 1
    best = 0
    for k in range(4):
        if w[k] > w[best]:
            best = k
    for k in range(4):
        if w[k] != 0.0:
            local = first + k - origin
            if local < 0 or local >= size:
                return False
            idx[k] = local
    for k in range(4):
        if w[k] == 0.0:
            idx[k] = first + best - origin
    return True


@numba.njit(cache=True)
def _knot(x: float, knots: np.ndarray) -> tuple[int, float]:
    """Left knot index and weight of the right knot for x, clamped to the knot range."""
    n = knots.size
    if n == 1 or x <= knots[0]:
        return 0, 0.0
    if x >= knots[n - 1]:
        return n - 2, 1.0
    k = int(np.searchsorted(knots, x, side="right")) - 1
    return k, (x - knots[k]) / (knots[k + 1] - knots[k])


@numba.njit(cache=True, nogil=True)
def _warp(
    src: np.ndarray,
    out: np.ndarray,
    r0: int,
    c0: int,
    coef: np.ndarray,
    affine: bool,
    order: int,
    knot_rows: np.ndarray,
    knot_cols: np.ndarray,
    knot_dx: np.ndarray,
    knot_dy: np.ndarray,
    gain: np.ndarray,
    offset: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """out[b, i, j] = src[b] sampled at global (i + r0 + dy, j + c0 + dx); NaN outside or on NaN;
    then times gain[b] plus offset[b] in float32 where `gain` has a value per band (row by row,
    while the row is in cache; empty `gain`: not scaled).

    (dx, dy) = the translation/affine model in `coef` plus the bilinear interpolation of the knot
    grid corrections (clamped at the outermost knots; a 1 x 1 grid of zeros adds nothing).
    Row by row, vectorised along the row: the sample positions, their cubic weights, then each
    band along runs of pixels whose 4 x 4 taps start at the same source row and column offset
    (the shift is smooth: a run is most of a row). Pixels with a zero-weight tap (an integer
    position), bilinear taps or taps outside the window take `_taps` and `_tap_sum` one by one.
    """
    nb, h, w = src.shape
    dx0, dy0, rc, cc = coef[0], coef[1], coef[2], coef[3]
    gxr, gxc, gyr, gyc = coef[4], coef[5], coef[6], coef[7]
    rmin, rmax, cmin, cmax = coef[8], coef[9], coef[10], coef[11]
    has_knots = knot_dx.size > 1 or knot_dx[0, 0] != 0.0 or knot_dy[0, 0] != 0.0
    gc = np.empty(w)  # what depends on the column only
    dcol = np.empty(w)
    kc = np.empty(w, np.int64)
    tc = np.empty(w)
    for j in range(w):
        gc[j] = float(j + c0)
        dcol[j] = min(max(gc[j], cmin), cmax) - cc
        kc[j], tc[j] = _knot(gc[j], knot_cols)
    sy = np.empty(w)
    sx = np.empty(w)
    wy = np.empty((4, w), np.float32)
    wx = np.empty((4, w), np.float32)
    fy = np.empty(w, np.int64)  # first tap, local to the window
    fx = np.empty(w, np.int64)
    plain = np.empty(w, np.bool_)  # 4 in-window taps of nonzero weight on both axes
    iy = np.empty((w, 4), np.int64)
    ix = np.empty((w, 4), np.int64)
    ok = np.empty(w, np.bool_)
    vy = np.empty(4)
    vx = np.empty(4)
    ntap = 2 if order == 1 else 4
    # bilinear in the knot grids: along the columns once per window (per knot row), then per row
    along_dx = _along_columns(knot_dx, kc, tc)
    along_dy = _along_columns(knot_dy, kc, tc)
    last_knot_row = knot_dx.shape[0] - 1
    for i in range(h):
        gr = float(i + r0)
        dr = min(max(gr, rmin), rmax) - rc
        kr, tr = _knot(gr, knot_rows)
        top_dx, bottom_dx = along_dx[kr], along_dx[min(kr + 1, last_knot_row)]
        top_dy, bottom_dy = along_dy[kr], along_dy[min(kr + 1, last_knot_row)]
        for j in range(w):
            dx = dx0
            dy = dy0
            if affine:
                dx += gxr * dr + gxc * dcol[j]
                dy += gyr * dr + gyc * dcol[j]
            if has_knots:
                dx += top_dx[j] * (1.0 - tr) + bottom_dx[j] * tr
                dy += top_dy[j] * (1.0 - tr) + bottom_dy[j] * tr
            sy[j] = gr + dy
            sx[j] = gc[j] + dx
        _cubic_weights(sy, r0, h, wy, fy)
        _cubic_weights(sx, c0, w, wx, fx)
        for j in range(w):
            plain[j] = order == 3 and fy[j] >= 0 and fx[j] >= 0
            if not plain[j]:
                ok[j] = _taps(sy[j], r0, h, order, iy[j], vy) and _taps(sx[j], c0, w, order, ix[j], vx)
                for k in range(4):
                    wy[k, j] = vy[k]
                    wx[k, j] = vx[k]
        j = 0
        while j < w:
            if not plain[j]:
                for b in range(nb):
                    out[b, i, j] = (
                        _tap_sum(src[b], iy[j], ix[j], wy[:, j], wx[:, j], ntap) if ok[j] else np.nan
                    )
                j += 1
                continue
            end = j + 1
            while end < w and plain[end] and fy[end] == fy[j] and fx[end] - end == fx[j] - j:
                end += 1
            c = fx[j]
            n = end - j
            for b in range(nb):
                _cubic_run(
                    src[b, fy[j]],
                    src[b, fy[j] + 1],
                    src[b, fy[j] + 2],
                    src[b, fy[j] + 3],
                    c,
                    n,
                    j,
                    wy,
                    wx,
                    out[b, i],
                )
            j = end
        if gain.size:
            for b in range(nb):
                _scale_row(out[b, i], gain[b], offset[b])


@numba.njit(cache=True, nogil=True, inline="always")
def _scale_row(row: np.ndarray, gain: np.float32, offset: np.float32) -> None:  # pragma: no cover
    """row = row * gain + offset, rounded after each step (numpy's `*=` then `+=`)."""
    for j in range(row.size):
        row[j] = row[j] * gain + offset


@numba.njit(cache=True, nogil=True)
def _along_columns(grid: np.ndarray, kc: np.ndarray, tc: np.ndarray) -> np.ndarray:  # pragma: no cover
    """grid[r, kc] * (1 - tc) + grid[r, kc + 1] * tc for every knot row r and column j (the
    right knot clamped to the last): the first step of the knot grid's bilinear interpolation."""
    last = grid.shape[1] - 1
    out = np.empty((grid.shape[0], kc.size))
    for r in range(grid.shape[0]):
        for j in range(kc.size):
            out[r, j] = grid[r, kc[j]] * (1.0 - tc[j]) + grid[r, min(kc[j] + 1, last)] * tc[j]
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _cubic_weights(
    s: np.ndarray, origin: int, size: int, wgt: np.ndarray, first: np.ndarray
) -> None:  # pragma: no cover
    """`_taps` (cubic) of each coordinate in `s`, vectorised: weights into `wgt` (4, n) and the
    first tap, local to the window, into `first`; -1 there when a weight is zero or a tap falls
    outside the window (then `_taps` decides)."""
    for j in range(s.size):
        i0 = math.floor(s[j])
        t = s[j] - i0
        nonzero = True
        for k in range(4):
            v = _keys(abs(t - (k - 1)))
            wgt[k, j] = v
            nonzero &= v != 0.0
        local = int(i0) - 1 - origin
        first[j] = local if nonzero and local >= 0 and local + 3 < size else -1


@numba.njit(cache=True, nogil=True, inline="always")
def _tap_sum(
    src: np.ndarray, iy: np.ndarray, ix: np.ndarray, wy: np.ndarray, wx: np.ndarray, ntap: int
) -> np.float32:  # pragma: no cover - compiled
    """sum over ky of wy * (sum over kx of wx * src[iy, ix]), in float32, in that order."""
    acc = np.float32(0.0)
    for ky in range(ntap):
        row = np.float32(0.0)
        for kx in range(ntap):
            row += wx[kx] * src[iy[ky], ix[kx]]
        acc += wy[ky] * row
    return acc


@numba.njit(cache=True, nogil=True, inline="always")
def _cubic_run(
    s0: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    s3: np.ndarray,
    c: int,
    n: int,
    j: int,
    wy: np.ndarray,
    wx: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """`_tap_sum` of the n pixels from j whose 4 x 4 taps are rows s0..s3 at columns c+q..c+q+3."""
    rows = (s0[c : c + n + 3], s1[c : c + n + 3], s2[c : c + n + 3], s3[c : c + n + 3])
    wx0, wx1, wx2, wx3 = wx[0, j : j + n], wx[1, j : j + n], wx[2, j : j + n], wx[3, j : j + n]
    wy0, wy1, wy2, wy3 = wy[0, j : j + n], wy[1, j : j + n], wy[2, j : j + n], wy[3, j : j + n]
    o = out[j : j + n]
    for q in range(n):
        acc = np.float32(0.0)
        for ky in range(4):
            r = rows[ky]
            row = np.float32(0.0)
            row += wx0[q] * r[q]
            row += wx1[q] * r[q + 1]
            row += wx2[q] * r[q + 2]
            row += wx3[q] * r[q + 3]
            wyk = wy0[q] if ky == 0 else (wy1[q] if ky == 1 else (wy2[q] if ky == 2 else wy3[q]))
            acc += wyk * row
        o[q] = acc


@dataclass(frozen=True)
class KnotGrid:
    """Shift corrections (px) on a rectilinear grid of knots, interpolated bilinearly between them."""

    rows: npt.NDArray[np.float64]  # (ny,) increasing global row coordinates
    cols: npt.NDArray[np.float64]  # (nx,) increasing global column coordinates
    dx: npt.NDArray[np.float64]  # (ny, nx)
    dy: npt.NDArray[np.float64]  # (ny, nx)

    def at(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dx, dy) corrections at global pixel coordinates (numpy twin of the kernel's lookup)."""
        kr, tr = _knot_indices(np.asarray(rows, dtype=np.float64), self.rows)
        kc, tc = _knot_indices(np.asarray(cols, dtype=np.float64), self.cols)
        kr, tr, kc, tc = np.broadcast_arrays(kr, tr, kc, tc)
        r1 = np.minimum(kr + 1, self.dx.shape[0] - 1)
        c1 = np.minimum(kc + 1, self.dx.shape[1] - 1)

        def interp(g: np.ndarray) -> np.ndarray:
            top = g[kr, kc] * (1 - tc) + g[kr, c1] * tc
            return np.asarray(top * (1 - tr) + (g[r1, kc] * (1 - tc) + g[r1, c1] * tc) * tr)

        return interp(self.dx), interp(self.dy)


def _knot_indices(x: np.ndarray, knots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised `_knot`: left knot index and right-knot weight, clamped to the knot range."""
    if knots.size == 1:
        return np.zeros(x.shape, np.int64), np.zeros(x.shape)
    k = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, knots.size - 2)
    t = np.clip((x - knots[k]) / (knots[k + 1] - knots[k]), 0.0, 1.0)
    return k, t


NO_KNOTS = KnotGrid(np.zeros(1), np.zeros(1), np.zeros((1, 1)), np.zeros((1, 1)))


def apply_shift(
    bands: np.ndarray,
    model: ShiftModel,
    *,
    origin: tuple[int, int] = (0, 0),
    order: Literal[1, 3] = 3,
    knots: KnotGrid = NO_KNOTS,
    gain: Sequence[float] | None = None,
    offset: Sequence[float] | None = None,
) -> np.ndarray:
    """Resample a target window (..., H, W) onto the reference grid: out(p) = target(p + shift(p)).

    shift(p) = model.shift_at(p) + knots.at(p) (a per-tile correction field, zero by default).

    Weights depend only on global coordinates, so adjacent windows agree with their union away
    from the edges; NaN where the source falls outside the window or touches a NaN. order: 1
    bilinear, 3 cubic convolution (sharper; the default). With `gain` and `offset` (one per
    band of a (bands, H, W) stack) the result is ``gain * out + offset`` per band, in float32 as
    `normalize.apply_normalization` computes it, written once instead of copied.
    """
    arr = np.asarray(bands, dtype=np.float32)
    if arr.ndim < 2:
        raise ValueError(f"bands must be (..., H, W), got shape {arr.shape}")
    if order not in (1, 3):
        raise ValueError(f"order must be 1 or 3, got {order}")
    src = np.ascontiguousarray(arr.reshape((-1, *arr.shape[-2:])))
    scale = np.empty((2, 0), np.float32)
    if gain is not None or offset is not None:
        if gain is None or offset is None or arr.ndim != 3 or not len(gain) == len(offset) == len(arr):
            raise ValueError(f"gain and offset: one each per band of (bands, H, W), got shape {arr.shape}")
        scale = np.array([gain, offset], np.float32)
    out = np.empty_like(src)
    coef = np.array(
        [model.dx_px, model.dy_px, *model.centre, *model.gradient, *model.extent], dtype=np.float64
    )
    affine = model.method == "local-affine"
    knot_arrays = (knots.rows, knots.cols, knots.dx, knots.dy)
    rows, cols, dx, dy = (np.ascontiguousarray(a, np.float64) for a in knot_arrays)
    r0, c0 = int(origin[0]), int(origin[1])
    _warp(src, out, r0, c0, coef, affine, int(order), rows, cols, dx, dy, scale[0], scale[1])
    return out.reshape(arr.shape)
