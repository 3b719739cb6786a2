"""Read one raster band (file or URL) onto a GeoBox with GDAL warping, window by window."""

from __future__ import annotations

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT

from imagery.errors import InputError
from imagery.sentinel2 import QUANTIFICATION_VALUE

#: GDAL settings for reads: a modest block cache and threaded decoding of the COG blocks.
GDAL_READ_ENV = {"GDAL_CACHEMAX": 256, "GDAL_NUM_THREADS": "ALL_CPUS", "VSI_CACHE": True}


def _resampling(src_res: float, dst_res: float, categorical: bool) -> Resampling:
    if categorical:
        return Resampling.nearest
    return Resampling.average if src_res < 0.75 * dst_res else Resampling.bilinear


def read_band(href: str, gbox: GeoBox, *, band: int = 1, categorical: bool = False) -> np.ndarray:
    """The raw values of `href` band `band` on `gbox`; 0 (Sentinel-2 no data) outside the scene."""
    try:
        with rasterio.Env(**GDAL_READ_ENV), rasterio.open(href) as src:
            if band > src.count:
                raise InputError(f"{href}: has {src.count} band(s), band {band} was requested")
            src_nodata = src.nodata if src.nodata is not None else 0
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
