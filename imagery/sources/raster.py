"""Read one raster band (file or URL) onto a GeoBox: a plain windowed read when the file's pixel
grid is aligned with the GeoBox (same CRS, whole-pixel offset, resolution a whole multiple of the
grid's), GDAL warping otherwise."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import numba
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
from imagery.sources.block_store import DecodedBlocks
from imagery.sources.open_rasters import OpenRasters

#: GDAL settings for reads: a block cache (bytes) and threaded decoding of the COG blocks. Aligned
#: reads of tiled local files keep their decoded blocks in `DECODED_BLOCKS` instead, so GDAL's own
#: cache only serves warped and remote reads; it counts in the run's peak memory. No VSI_CACHE: it
#: keeps up to 25 MB of file bytes per open file (0.6 GiB of the Lima run's peak with 42 files
#: kept open) that the page cache holds anyway; remote reads have GDAL's HTTP cache.
GDAL_READ_ENV = {"GDAL_CACHEMAX": 64 * 2**20, "GDAL_NUM_THREADS": "ALL_CPUS", "VSI_CACHE": False}
#: Files kept open between reads in this process.
OPEN_RASTERS = OpenRasters()
#: Decoded blocks of the local files, shared by the tiles a process reads (see block_store).
DECODED_BLOCKS = DecodedBlocks()
#: Smallest block side read through DECODED_BLOCKS (striped files are read by GDAL directly).
MIN_BLOCK_PX = 64


def drop_read_caches() -> None:
    """Forget the decoded blocks and close the kept-open files: at the end of a pass over the
    inputs (the pair fit, the tiles), so what follows has that memory (up to ~0.2 GiB)."""
    DECODED_BLOCKS.clear()
    OPEN_RASTERS.close()


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


class UnfitValues(InputError):
    """A band's values that the caller's array type cannot hold exactly (e.g. float pixels read as
    uint16 digital numbers)."""


def read_band(
    href: str, gbox: GeoBox, *, band: int = 1, categorical: bool = False, out: np.ndarray | None = None
) -> np.ndarray:
    """The raw values of `href` band `band` on `gbox`; 0 (Sentinel-2 no data) outside the scene.
    With `out` (gbox's shape) they are written there and `out` is returned: read straight into it
    when it has the file's type, else converted exactly (`UnfitValues` when they do not fit).

    Aligned grids (e.g. 10 m and 20 m Sentinel-2 bands onto their own 10 m grid) are read as a
    plain window and upsampled in numpy with the warp's own rules (nearest for categorical
    bands, bilinear otherwise, no data excluded); any other grid is warped by GDAL."""
    if out is not None and out.shape != (gbox.shape.y, gbox.shape.x):
        raise ValueError(f"read_band: out is {out.shape}, the grid {gbox.shape.y}x{gbox.shape.x}")
    try:
        with rasterio.Env(**GDAL_READ_ENV), OPEN_RASTERS.reading(href) as (src, file_key):
            if band > src.count:
                raise InputError(f"{href}: has {src.count} band(s), band {band} was requested")
            src_nodata = src.nodata if src.nodata is not None else 0
            aligned = alignment(src, gbox, file_key)
            if aligned is not None:
                direct = out if out is not None and out.dtype == src.dtypes[band - 1] else None
                values = _read_aligned(src, file_key, band, gbox, aligned, src_nodata, categorical, direct)
                return values if out is None or direct is not None else exactly_into(out, values, href)
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
                warped = vrt.read(band)
            return warped if out is None else exactly_into(out, warped, href)
    except RasterioError as exc:
        raise InputError(f"{href}: not a readable GeoTIFF/JP2 ({_first_line(exc)})") from None


def exactly_into(out: np.ndarray, values: np.ndarray, what: str) -> np.ndarray:
    """out[...] = values when out's type holds every value exactly, else UnfitValues."""
    if not np.can_cast(values.dtype, out.dtype, "safe"):
        with np.errstate(invalid="ignore"):
            converted = values.astype(out.dtype)
        if not np.array_equal(converted, values):
            raise UnfitValues(f"{what}: {values.dtype} values that {out.dtype} cannot hold")
        values = converted
    out[...] = values
    return out


def block_grid(href: str, gbox: GeoBox) -> tuple[int, int, int, int] | None:
    """Where a local file's block boundaries fall on `gbox`: (row period, column period, row
    offset, column offset) in grid pixels; None for URLs, unaligned grids and untiled files."""
    if not Path(href).is_file():
        return None
    try:
        with rasterio.Env(**GDAL_READ_ENV), OPEN_RASTERS.reading(href) as (src, file_key):
            at = alignment(src, gbox, file_key) if _in_blocks(src, 1) else None
            bh, bw = src.block_shapes[0]
    except RasterioError:
        return None
    if at is None:
        return None
    period_r, period_c = bh * at.factor, bw * at.factor
    return period_r, period_c, -at.row % period_r, -at.col % period_c


def _in_blocks(src: rasterio.io.DatasetReader, band: int) -> bool:
    """Whether `band` is stored in square-ish blocks (tiled), which DECODED_BLOCKS reads."""
    return min(src.block_shapes[band - 1]) >= MIN_BLOCK_PX


def alignment(
    src: rasterio.io.DatasetReader, gbox: GeoBox, file_key: Hashable | None = None
) -> Alignment | None:
    """The alignment of `gbox` on the file's grid, or None when only a warp can map one onto the
    other; `file_key` (see OpenRasters) lets the CRS comparison be remembered for that file."""
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
    if not _same_crs_of(src, gbox, file_key):
        return None
    return Alignment(factor, round(row), round(col))


#: (file key, grid CRS) -> whether the file is on that CRS: pyproj's EPSG lookup costs more than
#: the rest of a cached band read.
_SAME_CRS: dict[tuple[Hashable, str], bool] = {}


def _same_crs_of(src: rasterio.io.DatasetReader, gbox: GeoBox, file_key: Hashable | None) -> bool:
    """Whether the file is on the grid's CRS, remembered per file version when `file_key` is given."""
    if file_key is None:
        return _same_crs(src.crs, gbox)
    key = (file_key, str(gbox.crs))
    same = _SAME_CRS.get(key)
    if same is None:
        same = _SAME_CRS[key] = _same_crs(src.crs, gbox)
    return same


def _same_crs(crs: CRS, gbox: GeoBox) -> bool:
    epsg = crs.to_epsg()
    if epsg is not None and gbox.crs is not None and gbox.crs.epsg is not None:
        return bool(epsg == gbox.crs.epsg)
    return bool(crs == CRS.from_wkt(gbox.crs.to_wkt()))  # type: ignore[union-attr]


def _read_aligned(
    src: rasterio.io.DatasetReader,
    file_key: Hashable | None,
    band: int,
    gbox: GeoBox,
    at: Alignment,
    src_nodata: float,
    categorical: bool,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """`gbox` from an aligned file: the covering window, read once, upsampled by `at.factor`; into
    `out` (the file's type, gbox's shape) when given."""
    k, (ny, nx) = at.factor, (gbox.shape.y, gbox.shape.x)
    if out is None:
        out = np.empty((ny, nx), src.dtypes[band - 1])
    # File pixel under each grid pixel's centre; grid pixels whose centre is off the file are no data.
    rows = np.floor_divide(at.row + np.arange(ny), k)
    cols = np.floor_divide(at.col + np.arange(nx), k)
    bilinear = k > 1 and not categorical
    r0, r1 = _support(at.row, ny, k, bilinear, src.height)
    c0, c1 = _support(at.col, nx, k, bilinear, src.width)
    inside_r = np.flatnonzero((rows >= 0) & (rows < src.height))
    inside_c = np.flatnonzero((cols >= 0) & (cols < src.width))
    if r0 >= r1 or c0 >= c1 or inside_r.size == 0 or inside_c.size == 0:
        out[...] = 0
        return out
    window = Window(c0, r0, c1 - c0, r1 - r0)
    whole = k == 1 and (r1 - r0, c1 - c0) == (ny, nx)  # the window itself, all of it on the file
    into = out if whole else None
    if file_key is not None and _in_blocks(src, band):
        data = DECODED_BLOCKS.read(src, file_key, band, window, out=into)
    else:
        data = src.read(band, window=window, out=into)
    if whole:
        if src_nodata != 0:
            out[out == src_nodata] = 0
        return out
    rs, cs = slice(inside_r[0], inside_r[-1] + 1), slice(inside_c[0], inside_c[-1] + 1)
    _zero_outside(out, rs, cs)
    if bilinear:
        _bilinear_upsample(data, src_nodata, at, (r0, c0), inside_r, inside_c, out[rs, cs])
        return out
    # nearest: the window itself (k == 1) or each file pixel repeated k x k times
    values = out[rs, cs]
    _take(data, rows[rs] - r0, cols[cs] - c0, values)
    if src_nodata != 0:
        values[values == src_nodata] = 0
    return out


def _zero_outside(out: np.ndarray, rs: slice, cs: slice) -> None:
    """out = 0 outside rows `rs` x columns `cs` (the grid pixels off the file)."""
    out[: rs.start] = 0
    out[rs.stop :] = 0
    out[rs, : cs.start] = 0
    out[rs, cs.stop :] = 0


def _support(first: int, n: int, k: int, bilinear: bool, size: int) -> tuple[int, int]:
    """The file rows (or columns) that grid pixels first..first+n-1 read, clamped to the file: the
    one under each centre, or for bilinear the two around it (no more: a tile that ends on a block
    boundary must not decode the next block)."""
    if bilinear:
        lo, hi = math.floor((first + 0.5) / k - 0.5), math.floor((first + n - 0.5) / k - 0.5) + 2
    else:
        lo, hi = first // k, (first + n - 1) // k + 1
    return max(lo, 0), min(hi, size)


@numba.njit(cache=True, nogil=True)
def _take(data: np.ndarray, rows: np.ndarray, cols: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """out[i, j] = data[rows[i], cols[j]] (np.ix_ indexing without the index arrays)."""
    for i in range(rows.size):
        r = rows[i]
        for j in range(cols.size):
            out[i, j] = data[r, cols[j]]


def _bilinear_upsample(
    data: np.ndarray,
    src_nodata: float,
    at: Alignment,
    origin: tuple[int, int],
    inside_r: np.ndarray,
    inside_c: np.ndarray,
    out: np.ndarray,
) -> None:
    """Bilinear values at the centres of grid pixels `inside_r` x `inside_c` (GeoBox indices) from a
    file window at `origin` whose pixels are `at.factor` grid pixels wide, into `out`, as GDAL's warp
    computes them: no-data neighbours left out of the weights, no data where the pixel under the
    centre is no data, rounded back to the file's integer type."""
    k = at.factor
    pos_r = (at.row + inside_r + 0.5) / k - 0.5 - origin[0]
    pos_c = (at.col + inside_c + 0.5) / k - 0.5 - origin[1]
    # per row and per column once: the upper-left neighbour, its weight's complement, the centre
    r0, c0 = np.floor(pos_r), np.floor(pos_c)
    valid = data != src_nodata
    if _exact_in_integers(data.dtype, k) and valid.all():
        _bilinear_no_gaps(
            data, *_taps(r0, pos_r - r0, data.shape[0], k), *_taps(c0, pos_c - c0, data.shape[1], k), out
        )
        return
    centre_r, centre_c = np.floor(pos_r + 0.5).astype(np.intp), np.floor(pos_c + 0.5).astype(np.intp)
    _bilinear(
        data, valid, r0.astype(np.intp), pos_r - r0, centre_r, c0.astype(np.intp), pos_c - c0, centre_c,
        np.issubdtype(data.dtype, np.integer), out,
    )  # fmt: skip


def _exact_in_integers(dtype: np.dtype, k: int) -> bool:
    """Whether `_bilinear_no_gaps` gives `_bilinear`'s values: integer data of at most 16 bits and a
    power-of-two factor up to 64, so that every weight is a multiple of 1 / (2k)^2 and every
    weighted sum is exact in float64 and fits in int32."""
    return np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2 and (k & (k - 1)) == 0 and k <= 64


def _taps(
    first: np.ndarray, frac: np.ndarray, size: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The two file rows (or columns) each output row reads and their weights in units of 1 / (2k),
    the rows clamped to the window: a neighbour beyond the file then repeats its pair, which gives
    the value of the warp's weights renormalised over the neighbours inside."""
    lo, hi = np.clip(first, 0, size - 1).astype(np.intp), np.clip(first + 1, 0, size - 1).astype(np.intp)
    w_hi = np.rint(frac * 2 * k).astype(np.int32)
    return lo, hi, 2 * k - w_hi, w_hi


@numba.njit(cache=True, nogil=True)
def _bilinear_no_gaps(
    data: np.ndarray,
    row_lo: np.ndarray,
    row_hi: np.ndarray,
    w_row_lo: np.ndarray,
    w_row_hi: np.ndarray,
    col_lo: np.ndarray,
    col_hi: np.ndarray,
    w_col_lo: np.ndarray,
    w_col_hi: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover
    """`_bilinear` of a window without no data, in integers: each file row interpolated along the
    output columns once (kept in one of two slots: an output row reads two neighbouring file
    rows), then each output row from its two file rows (a vectorised pass), rounded half up as
    `floor(value + 0.5)` is."""
    unit = (w_row_lo[0] + w_row_hi[0]) * (w_col_lo[0] + w_col_hi[0])  # (2k)^2, the weights' sum
    shift = 0
    while (1 << shift) < unit:
        shift += 1
    half = np.int32(unit // 2)
    along = np.empty((2, col_lo.size), np.int32)
    held = np.full(2, -1, np.intp)  # the file row in each slot
    for i in range(row_lo.size):
        for r in (row_lo[i], row_hi[i]):
            slot = r % 2
            if held[slot] != r:
                held[slot] = r
                values, dst = data[r], along[slot]
                for j in range(col_lo.size):
                    left, right = np.int32(values[col_lo[j]]), np.int32(values[col_hi[j]])
                    dst[j] = w_col_lo[j] * left + w_col_hi[j] * right
        lo, hi = along[row_lo[i] % 2], along[row_hi[i] % 2]
        a, b = w_row_lo[i], w_row_hi[i]
        row = out[i]
        for j in range(row.size):
            row[j] = (a * lo[j] + b * hi[j] + half) >> shift


@numba.njit(cache=True, nogil=True)
def _bilinear(
    data: np.ndarray,
    valid: np.ndarray,
    row0: np.ndarray,
    frac_r: np.ndarray,
    centre_r: np.ndarray,
    col0: np.ndarray,
    frac_c: np.ndarray,
    centre_c: np.ndarray,
    to_int: bool,
    out: np.ndarray,
) -> None:  # pragma: no cover
    nr, nc = data.shape
    for i in range(row0.size):
        r0, fr, rc = row0[i], frac_r[i], centre_r[i]
        for j in range(col0.size):
            if not valid[rc, centre_c[j]]:
                out[i, j] = 0
                continue
            c0, fc = col0[j], frac_c[j]
            num = 0.0
            den = 0.0
            for dr in range(2):
                r = r0 + dr
                if r < 0 or r >= nr:
                    continue
                wr = fr if dr else 1.0 - fr
                for dc in range(2):
                    c = c0 + dc
                    if c < 0 or c >= nc or not valid[r, c]:
                        continue
                    w = wr * (fc if dc else 1.0 - fc)
                    num += w * data[r, c]
                    den += w
            value = num / den if den > 1e-6 else 0.0
            out[i, j] = np.floor(value + 0.5) if to_int else value


def to_reflectance(dn: np.ndarray, boa_offset: float = 0.0, out: np.ndarray | None = None) -> np.ndarray:
    """Digital numbers -> float32 reflectance with the baseline offset removed; 0 -> NaN. Written
    into `out` (float32, C-contiguous, dn's shape) when given."""
    if out is None:
        out = np.empty(dn.shape, np.float32)
    elif out.dtype != np.float32 or out.shape != dn.shape or not out.flags.c_contiguous:
        raise ValueError(
            f"to_reflectance: out must be C-contiguous float32 {dn.shape}, got {out.dtype} {out.shape}"
        )
    _to_reflectance(
        dn.reshape(-1), np.float32(boa_offset), np.float32(1.0 / QUANTIFICATION_VALUE), out.reshape(-1)
    )
    return out


@numba.njit(cache=True, nogil=True)
def _to_reflectance(
    dn: np.ndarray, offset: np.float32, scale: np.float32, out: np.ndarray
) -> None:  # pragma: no cover
    """(float32(dn) + offset) * scale in float32, NaN where dn is 0 (no data), in one pass."""
    for i in range(dn.size):
        if dn[i] == 0:
            out[i] = np.nan
        else:
            v = np.float32(dn[i])
            if offset != 0:
                v = v + offset
            out[i] = v * scale


def _native_resolution_in(src: rasterio.io.DatasetReader, gbox: GeoBox) -> float:
    """The source pixel size expressed in the grid's units (metres for UTM grids)."""
    res = abs(src.transform.a)
    if src.crs is not None and src.crs.is_geographic and gbox.crs is not None and not gbox.crs.geographic:
        res *= 111_320.0 * np.cos(np.deg2rad((src.bounds.top + src.bounds.bottom) / 2))
    return float(res)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
