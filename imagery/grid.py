"""The run grid: one GeoBox for the whole run (AOI's UTM zone, 10 m) and its processing tiles."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from imagery.aoi import AOI
from imagery.errors import InputError

#: Largest run grid accepted (4x the Lima+Callao bounding box).
MAX_GRID_PIXELS = 400_000_000


def run_geobox(aoi: AOI, resolution: float = 10.0, crs: CRS | None = None) -> GeoBox:
    """The AOI's bounding box in its UTM zone, snapped to whole multiples of the resolution."""
    geom = Geometry(aoi.geometry, crs="EPSG:4326").to_crs(crs or aoi.utm_crs())
    gbox = GeoBox.from_geopolygon(geom, resolution=resolution, tight=False)
    if gbox.shape.x * gbox.shape.y > MAX_GRID_PIXELS:
        raise InputError(
            f"AOI {aoi.name}: grid of {gbox.shape.x}x{gbox.shape.y} px at {resolution} m is larger "
            f"than {MAX_GRID_PIXELS:,} px; use a smaller AOI or a coarser --resolution"
        )
    return gbox


def clip_geobox(gbox: GeoBox, footprint: BaseGeometry, footprint_crs: str = "EPSG:4326") -> GeoBox:
    """The part of the grid covering `footprint` (pixel-aligned with the original grid)."""
    geom = Geometry(footprint, crs=footprint_crs).to_crs(str(gbox.crs))
    inter = geom.intersection(gbox.extent)
    if inter.is_empty or inter.area <= 0:
        raise InputError("the scenes do not cover the AOI: no overlap between AOI and imagery")
    minx, miny, maxx, maxy = inter.boundingbox
    inv = ~gbox.affine
    cols, rows = zip(*(inv * (x, y) for x in (minx, maxx) for y in (miny, maxy)), strict=True)
    r0, r1 = max(int(math.floor(min(rows))), 0), min(int(math.ceil(max(rows))), gbox.shape.y)
    c0, c1 = max(int(math.floor(min(cols))), 0), min(int(math.ceil(max(cols))), gbox.shape.x)
    return gbox[r0:r1, c0:c1]


def pixel_area_m2(gbox: GeoBox) -> float:
    """Ground area of one pixel, also for geographic (degree) grids, at the grid's centre latitude."""
    area = abs(gbox.resolution.x * gbox.resolution.y)
    if gbox.crs is not None and gbox.crs.geographic:
        lat = math.radians(gbox.extent.centroid.coords[0][1])
        area *= 111_320.0 * 110_574.0 * math.cos(lat)
    return area


@dataclass(frozen=True)
class Tile:
    """One processing tile: its index, its pixel window in the run grid and the padded read grid."""

    row: int
    col: int
    row0: int
    col0: int
    height: int
    width: int

    @property
    def name(self) -> str:
        """Stable name used for tile files and Dask keys."""
        return f"r{self.row:03d}c{self.col:03d}"

    def padded(self, gbox: GeoBox, halo: int) -> tuple[GeoBox, tuple[int, int], tuple[slice, slice]]:
        """Grid of the tile grown by `halo` px (clamped to the run grid), its origin, the inner crop."""
        r0 = max(self.row0 - halo, 0)
        c0 = max(self.col0 - halo, 0)
        r1 = min(self.row0 + self.height + halo, gbox.shape.y)
        c1 = min(self.col0 + self.width + halo, gbox.shape.x)
        inner = (
            slice(self.row0 - r0, self.row0 - r0 + self.height),
            slice(self.col0 - c0, self.col0 - c0 + self.width),
        )
        return gbox[r0:r1, c0:c1], (r0, c0), inner


def tiles(gbox: GeoBox, tile_size: int, anchor: tuple[int, int] = (0, 0)) -> list[Tile]:
    """Split the grid into tiles of `tile_size` px whose edges fall on rows and columns
    ``anchor + k * tile_size`` (the first and last row/column of tiles may be smaller)."""
    ny, nx = gbox.shape.y, gbox.shape.x
    out = []
    for i, (r0, r1) in enumerate(_cuts(ny, tile_size, anchor[0])):
        for j, (c0, c1) in enumerate(_cuts(nx, tile_size, anchor[1])):
            out.append(Tile(i, j, r0, c0, r1 - r0, c1 - c0))
    return out


def _cuts(n: int, size: int, anchor: int) -> list[tuple[int, int]]:
    edges = [0, *range(anchor % size or size, n, size), n]
    return list(itertools.pairwise(edges))


def tile_anchor(
    block_grids: Sequence[tuple[int, int, int, int]], tile_size: int, reach: int
) -> tuple[int, int]:
    """Where tile edges go so that every padded tile window ends on an input block boundary.

    `block_grids` holds each input file's block boundaries on the run grid as (row period, column
    period, row offset, column offset). With tile edges `reach` px (the halo, and what reads add to
    it) before a boundary, a tile reads below and right of it only up to a boundary, and above and
    left only into blocks of tiles read earlier (row by row), whose edges `sources.block_store`
    keeps. The coarsest block grid that the tile size is a whole multiple of is used; (0, 0) when
    there is none."""
    usable = [g for g in block_grids if tile_size % g[0] == 0 and tile_size % g[1] == 0]
    if not usable:
        return (0, 0)
    _, _, offset_r, offset_c = max(usable, key=lambda g: g[0] * g[1])
    return ((offset_r - reach) % tile_size, (offset_c - reach) % tile_size)
