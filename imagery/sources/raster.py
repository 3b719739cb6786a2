"""Read one raster band (file or URL) onto a GeoBox: a plain windowed read when the file's pixel
grid is aligned with the GeoBox (same CRS, whole-pixel offset, resolution a whole multiple of the
grid's), GDAL warping otherwise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from imagery.errors import InputError
from imagery.sentinel2 import QUANTIFICATION_VALUE

#: GDAL settings for reads: a modest block cache and threaded decoding of the COG blocks.
GDAL_READ_ENV = {"GDAL_CACHEMAX": 256, "GDAL_NUM_THREADS": "ALL_CPUS", "VSI_CACHE": True}


@dataclass(frozen=True)
class Alignment:
    """How a GeoBox sits on a file's pixel grid: `factor` grid pixels per file pixel (per axis) and
    the GeoBox origin in grid pixels from the file's origin."""

    factor: int
    row: int
    col: int


def _resampling(src_res: float, dst_res: float, categorical: bool) -> Resampling:
    if categorical:
        return Resampling.nearest
    return Resampling.average if src_res < 0.75 * dst_res else Resampling.bilinear


def read_band(href: str, gbox: GeoBox, *, band: int = 1, categorical: bool = False) -> np.ndarray:
    """The raw values of `href` band `band` on `gbox`; 0 (Sentinel-2 no data) outside the scene.

    Aligned grids (e.g. 10 m and 20 m Sentinel-2 bands onto their own 10 m grid) are read as a
    plain window and upsampled in numpy with the warp's own rules (nearest for categorical
    bands, bilinear otherwise, no data excluded); any other grid is warped by GDAL."""
    try:
        with rasterio.Env(**GDAL_READ_ENV), rasterio.open(href) as src:
            if band > src.count:
                raise InputError(f"{href}: has {src.count} band(s), band {band} was requested")
            src_nodata = src.nodata if src.nodata is not None else 0
            aligned = alignment(src, gbox)
            if aligned is not None:
                return _read_aligned(src, band, gbox, aligned, src_nodata, categorical)
            src_res = _native_resolution_in(src, gbox)
            with WarpedVRT(
                src,
                crs=str(gbox.crs),
                transform=gbox.affine,
                width=gbox.shape.x,
                height=gbox.shape.y,
                resampling=_resampling(src_res, abs(gbox.resolution.x), categorical),
                src_nodata=src_nodata,
                nodata=0,
            ) as vrt:
                return vrt.read(band)
    except RasterioError as exc:
        raise InputError(f"{href}: not a readable GeoTIFF/JP2 ({_first_line(exc)})") from None


def alignment(src: rasterio.io.DatasetReader, gbox: GeoBox) -> Alignment | None:
    """The alignment of `gbox` on the file's grid, or None when only a warp can map one onto the other."""
    s, g = src.transform, gbox.affine
    if src.crs is None or gbox.crs is None or s.b or s.d or g.b or g.d:
        return None
    if not (s.a > 0 > s.e and g.a > 0 > g.e):
        return None
    ratio_x, ratio_y = s.a / g.a, s.e / g.e
    factor = round(ratio_x)
    if factor < 1 or abs(ratio_x - factor) > 1e-9 * factor or abs(ratio_y - factor) > 1e-9 * factor:
        return None
    col, row = (g.c - s.c) / g.a, (g.f - s.f) / g.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    if not _same_crs(src.crs, gbox):
        return None
    return Alignment(factor, round(row), round(col))


def _same_crs(crs: CRS, gbox: GeoBox) -> bool:
    epsg = crs.to_epsg()
    if epsg is not None and gbox.crs is not None and gbox.crs.epsg is not None:
        return bool(epsg == gbox.crs.epsg)
    return bool(crs == CRS.from_wkt(gbox.crs.to_wkt()))  # type: ignore[union-attr]


def _read_aligned(
    src: rasterio.io.DatasetReader,
    band: int,
    gbox: GeoBox,
    at: Alignment,
    src_nodata: float,
    categorical: bool,
) -> np.ndarray:
    """`gbox` from an aligned file: the covering window, read once, upsampled by `at.factor`."""
    k, (ny, nx) = at.factor, (gbox.shape.y, gbox.shape.x)
    # File pixel under each grid pixel's centre; grid pixels whose centre is off the file are no data.
    rows = np.floor_divide(at.row + np.arange(ny), k)
    cols = np.floor_divide(at.col + np.arange(nx), k)
    r0, r1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, src.height)
    c0, c1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, src.width)
    out = np.zeros((ny, nx), src.dtypes[band - 1])
    if r0 >= r1 or c0 >= c1:
        return out
    data = src.read(band, window=Window(c0, r0, c1 - c0, r1 - r0))
    inside_r = (rows >= 0) & (rows < src.height)
    inside_c = (cols >= 0) & (cols < src.width)
    valid = data != src_nodata
    centre = np.ix_(rows[inside_r] - r0, cols[inside_c] - c0)
    if k == 1 or categorical:
        values = data[centre]
    else:
        values = _bilinear_upsample(data, valid, at, (r0, c0), inside_r, inside_c)
    values[~valid[centre]] = 0  # as GDAL: no data where the pixel under the centre is no data
    out[np.ix_(inside_r, inside_c)] = values
    return out


def _bilinear_upsample(
    data: np.ndarray,
    valid: np.ndarray,
    at: Alignment,
    origin: tuple[int, int],
    inside_r: np.ndarray,
    inside_c: np.ndarray,
) -> np.ndarray:
    """Bilinear values at the grid pixel centres from a file window whose pixels are `at.factor`
    grid pixels wide, no-data neighbours left out of the weights (as GDAL's warp does), rounded
    back to the file's integer type."""
    k = at.factor
    pos_r = (at.row + np.flatnonzero(inside_r) + 0.5) / k - 0.5 - origin[0]
    pos_c = (at.col + np.flatnonzero(inside_c) + 0.5) / k - 0.5 - origin[1]
    values = np.where(valid, data, 0).astype(np.float32)
    weights = valid.astype(np.float32)
    values, weights = _lerp(values, weights, pos_r, axis=0)
    values, weights = _lerp(values, weights, pos_c, axis=1)
    ok = weights > 1e-6
    result = np.where(ok, values / np.where(ok, weights, 1), 0)
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        result = np.clip(np.floor(result + 0.5), info.min, info.max)
    return result.astype(data.dtype)


def _lerp(
    values: np.ndarray, weights: np.ndarray, pos: np.ndarray, axis: int
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted values and weights interpolated linearly at fractional indices `pos` along `axis`
    (neighbours off the array count as no data)."""
    n = values.shape[axis]
    lo = np.floor(pos).astype(np.intp)
    frac = (pos - lo).astype(np.float32)
    w_lo, w_hi = 1 - frac, frac
    w_lo[lo < 0] = 0
    w_hi[lo + 1 > n - 1] = 0
    i_lo, i_hi = np.clip(lo, 0, n - 1), np.clip(lo + 1, 0, n - 1)
    shape = (-1, 1) if axis == 0 else (1, -1)
    w_lo, w_hi = w_lo.reshape(shape), w_hi.reshape(shape)
    take = np.take
    num = take(values, i_lo, axis=axis) * w_lo + take(values, i_hi, axis=axis) * w_hi
    den = take(weights, i_lo, axis=axis) * w_lo + take(weights, i_hi, axis=axis) * w_hi
    return num, den


def to_reflectance(dn: np.ndarray, boa_offset: float = 0.0) -> np.ndarray:
    """Digital numbers -> float32 reflectance with the baseline offset removed; 0 -> NaN."""
    out = dn.astype(np.float32)
    nodata = dn == 0
    if boa_offset:
        out += np.float32(boa_offset)
    out *= np.float32(1.0 / QUANTIFICATION_VALUE)
    out[nodata] = np.nan
    return out


def _native_resolution_in(src: rasterio.io.DatasetReader, gbox: GeoBox) -> float:
    """The source pixel size expressed in the grid's units (metres for UTM grids)."""
    res = abs(src.transform.a)
    if src.crs is not None and src.crs.is_geographic and gbox.crs is not None and not gbox.crs.geographic:
        res *= 111_320.0 * np.cos(np.deg2rad((src.bounds.top + src.bounds.bottom) / 2))
    return float(res)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
