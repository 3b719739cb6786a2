"""The average overviews GDAL's COG driver makes of a float raster with NaN no data, computed here
in one compiled pass per level (strips of rows, each level from the one above it, as GDAL cascades
them) and handed to the driver ready-made: it then only encodes them, instead of averaging into a
temporary compressed file and reading that back (docs/performance.md). Same values bit for bit:
GDAL's AVERAGE with a no-data mask, in float64, pixel fractions weighted where a level's size is
not half the one above (tests/test_export.py compares whole COG files)."""

from __future__ import annotations

import math
from pathlib import Path

import numba
import numpy as np
import rasterio
from affine import Affine
from rasterio.shutil import copy as rio_copy
from rasterio.windows import Window

#: Output rows averaged at a time (memory: about twice as many source rows of one level).
STRIP_ROWS = 256


def level_shapes(height: int, width: int, blocksize: int) -> list[tuple[int, int]]:
    """(rows, cols) of each overview level the COG driver makes for a `blocksize` layout: factors
    2, 4, 8, ... (sizes rounded down) until a level fits in one block."""
    shapes: list[tuple[int, int]] = []
    factor, h, w = 1, height, width
    while max(h, w) > blocksize:
        factor *= 2
        h, w = max(1, height // factor), max(1, width // factor)
        shapes.append((h, w))
    return shapes


Spans = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@numba.njit(cache=True)
def _spans(
    n_src: int, n_dst: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """Per destination pixel: first and end source pixel, weights of the first and last (GDAL's)."""
    ratio = n_src / n_dst
    first = np.empty(n_dst, np.int64)
    end = np.empty(n_dst, np.int64)
    w_first = np.empty(n_dst)
    w_last = np.empty(n_dst)
    for j in range(n_dst):
        x0 = j * ratio
        a = int(x0 + 1e-8)
        x1 = (j + 1) * ratio
        b = int(math.ceil(x1 - 1e-8))
        if b == a:
            b += 1
        b = min(b, n_src)
        first[j] = a
        end[j] = b
        w_first[j] = 1.0 if b == a + 1 else 1 - (x0 - a)
        w_last[j] = 1 - (b - x1)
    return first, end, w_first, w_last


@numba.njit(cache=True, nogil=True)
def _average_rows(
    src: np.ndarray,
    row0: int,
    out: np.ndarray,
    out_row0: int,
    ys: Spans,
    xs: Spans,
) -> None:  # pragma: no cover - compiled
    """Rows out_row0 .. of a level from `src`, the rows row0 .. of the level above: per pixel, the
    valid (non-NaN) source pixels' values times their weights, summed per source row in float64, each
    row's sum times its row weight added up, over the summed weights; NaN where none is valid."""
    y_first, y_end, y_w_first, y_w_last = ys
    x_first, x_end, x_w_first, x_w_last = xs
    for r in range(out.shape[0]):
        y = out_row0 + r
        for x in range(out.shape[1]):
            a, b = x_first[x], x_end[x]
            total = 0.0
            weight = 0.0
            count = 0
            for iy in range(y_first[y], y_end[y]):
                row = src[iy - row0]
                line = 0.0
                line_w = 0.0
                v = row[a]
                if not np.isnan(v):
                    count += 1
                    line_w = x_w_first[x]
                    line = np.float64(v) * x_w_first[x]
                if a < b - 1:
                    for ix in range(a + 1, b - 1):
                        v = row[ix]
                        if not np.isnan(v):
                            count += 1
                            line_w += 1
                            line += np.float64(v)
                    v = row[b - 1]
                    if not np.isnan(v):
                        count += 1
                        line_w += x_w_last[x]
                        line += np.float64(v) * x_w_last[x]
                if iy == y_first[y]:
                    wy = y_w_first[y]
                elif iy + 1 == y_end[y]:
                    wy = y_w_last[y]
                else:
                    wy = 1.0
                total += line * wy
                weight += line_w * wy
            out[r, x] = np.float32(total / weight) if count else np.float32(np.nan)


def average_level(source: Path, target: Path, shape: tuple[int, int], rows: int = STRIP_ROWS) -> None:
    """Write the average of the float32 raster `source` on a `shape` grid to `target` (uncompressed
    GeoTIFF), `rows` rows at a time (one source buffer and one output buffer for all strips)."""
    with rasterio.Env(GTIFF_DIRECT_IO=True), rasterio.open(source) as src:
        ys = _spans(src.height, shape[0])
        xs = _spans(src.width, shape[1])
        transform = src.transform * Affine.scale(src.width / shape[1], src.height / shape[0])
        profile = {
            "driver": "GTiff", "height": shape[0], "width": shape[1], "count": 1, "dtype": "float32",
            "nodata": float("nan"), "tiled": True, "blockxsize": 512, "blockysize": 512,
            "crs": src.crs, "transform": transform,
        }  # fmt: skip
        strips = [(r0, min(shape[0], r0 + rows)) for r0 in range(0, shape[0], rows)]
        reach = max(int(ys[1][r1 - 1] - ys[0][r0]) for r0, r1 in strips)
        part = np.empty((reach, src.width), np.float32)
        out = np.empty((rows, shape[1]), np.float32)
        with rasterio.open(target, "w", **profile) as dst:
            for r0, r1 in strips:
                s0, s1 = int(ys[0][r0]), int(ys[1][r1 - 1])
                src.read(1, window=Window(0, s0, src.width, s1 - s0), out=part[: s1 - s0])
                _average_rows(part[: s1 - s0], s0, out[: r1 - r0], r0, ys, xs)
                dst.write(out[np.newaxis, : r1 - r0], window=Window(0, r0, shape[1], r1 - r0))


def with_average_overviews(scratch: Path, folder: Path, blocksize: int) -> Path:
    """A VRT in `folder` (an empty folder: the files in it are the VRT's) of the float32 raster
    `scratch` with its average overview levels for a `blocksize` COG, computed into `folder`; the
    VRT carries the raster's metadata, so the COG driver copies it as from `scratch`."""
    with rasterio.open(scratch) as ds:
        shapes = level_shapes(ds.height, ds.width, blocksize)
    levels: list[Path] = []
    above = scratch
    for index, shape in enumerate(shapes):
        level = folder / f"overview_{index}.tif"
        average_level(above, level, shape)
        levels.append(level)
        above = level
    vrt = folder / "source.vrt"
    rio_copy(scratch, vrt, driver="VRT")
    entry = (
        '<Overview><SourceFilename relativeToVRT="1">{}</SourceFilename><SourceBand>1</SourceBand></Overview>'
    )
    listed = "".join(entry.format(level.name) for level in levels)
    xml = vrt.read_text()
    vrt.write_text(xml.replace("</VRTRasterBand>", listed + "</VRTRasterBand>", 1))
    return vrt
