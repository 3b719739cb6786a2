"""Pairs for the co-registration benchmark: real OSCD bands, Fourier shifts, clouds, synthetic."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
import scipy.fft
from rasterio.warp import Resampling, reproject

F32 = npt.NDArray[np.float32]

DATA = Path(os.environ.get("VIGIA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
OSCD = DATA / "oscd-dev"
CITIES = ("abudhabi", "aguasclaras", "bordeaux", "hongkong", "nantes", "paris", "rennes")


def band_path(city: str, period: str, band: str) -> Path:
    """The single GeoTIFF of one band of one OSCD city/period."""
    hits = sorted((OSCD / city / period).glob(f"*_{band}.tif"))
    if not hits:
        raise FileNotFoundError(f"{OSCD / city / period}/*_{band}.tif: not found (OSCD dev data)")
    return hits[0]


def read_band(city: str, period: str, band: str) -> F32:
    """One OSCD band as float32 (top-of-atmosphere DN)."""
    with rasterio.open(band_path(city, period, band)) as src:
        return src.read(1).astype(np.float32)


def after_on_before_grid(city: str, band: str, ref_band: str = "B08") -> F32:
    """The after-date band reprojected (bilinear) onto the before `ref_band` grid; NaN outside."""
    with rasterio.open(band_path(city, "before", ref_band)) as ref:
        dst = np.full(ref.shape, np.nan, dtype=np.float32)
        dst_transform, dst_crs = ref.transform, ref.crs
    with rasterio.open(band_path(city, "after", band)) as src:
        reproject(
            src.read(1).astype(np.float32),
            dst,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=None,
            dst_transform=dst_transform,
            dst_crs=dst_crs,
            dst_nodata=np.nan,
            resampling=Resampling.bilinear,
        )
    return dst


def fourier_shift(img: F32, dx: float, dy: float) -> F32:
    """Shift by (dx, dy) px with a Fourier phase ramp: feature at (r, c) moves to (r+dy, c+dx)."""
    spec = scipy.fft.rfft2(img, workers=-1)
    u = scipy.fft.fftfreq(img.shape[0]).astype(np.float32)[:, None]
    v = scipy.fft.rfftfreq(img.shape[1]).astype(np.float32)[None, :]
    spec *= np.exp(np.complex64(-2j * np.pi) * (u * np.float32(dy) + v * np.float32(dx)))
    return scipy.fft.irfft2(spec, s=img.shape, workers=-1).astype(np.float32)


def add_clouds(img: F32, rng: np.random.Generator, cover: float = 0.15, nodata_corner: bool = True) -> F32:
    """Copy with NaN cloud blobs (about `cover` of the area) and a no-data wedge in one corner."""
    h, w = img.shape
    small = rng.standard_normal((max(h // 32, 4), max(w // 32, 4))).astype(np.float32)
    from scipy.ndimage import gaussian_filter, zoom

    field = zoom(gaussian_filter(small, 1.5), (h / small.shape[0], w / small.shape[1]), order=1)
    field = field[:h, :w]
    out = img.copy()
    out[field > np.quantile(field, 1 - cover)] = np.nan
    if nodata_corner:
        rr, cc = np.ogrid[:h, :w]
        out[(rr / h + cc / w) < 0.25] = np.nan
    return out


def synthetic_scene(size: int, bands: int, dx: float, dy: float, seed: int = 0) -> tuple[F32, F32]:
    """A (bands, size, size) pair with 1/f texture; the target is shifted by (dx, dy) exactly.

    Bands share one texture with band-specific gain plus independent noise (1 % of the
    texture spread) on each date, like a multispectral pair without real change.
    """
    rng = np.random.default_rng(seed)
    u = scipy.fft.fftfreq(size).astype(np.float32)[:, None]
    v = scipy.fft.rfftfreq(size).astype(np.float32)[None, :]
    f = np.sqrt(u * u + v * v)
    f[0, 0] = 1.0
    amp = (1.0 / (f + np.float32(2.0 / size))).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, amp.shape).astype(np.float32)
    spec = (amp * np.exp(np.complex64(1j) * phase)).astype(np.complex64)
    base = scipy.fft.irfft2(spec, s=(size, size), workers=-1).astype(np.float32)
    spec *= np.exp(np.complex64(-2j * np.pi) * (u * np.float32(dy) + v * np.float32(dx)))
    moved = scipy.fft.irfft2(spec, s=(size, size), workers=-1).astype(np.float32)
    del spec
    scale = np.float32(1000.0 / base.std())
    ref = np.empty((bands, size, size), np.float32)
    tgt = np.empty((bands, size, size), np.float32)
    for b in range(bands):
        gain = np.float32(1.0 + 0.3 * b)
        noise = np.float32(10.0)
        ref[b] = base * scale * gain + 2000 + noise * rng.standard_normal((size, size), np.float32)
        tgt[b] = moved * scale * gain + 2000 + noise * rng.standard_normal((size, size), np.float32)
    return ref, tgt
