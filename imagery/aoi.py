"""Areas of interest: load by name or from a vector file, validate, and pick the UTM zone."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pyproj import CRS
from shapely import make_valid
from shapely.geometry import MultiPolygon, Polygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from imagery.errors import InputError

#: Smallest and largest AOI a run accepts, in km2 (a block; a large Peruvian region).
MIN_AREA_KM2 = 0.01
MAX_AREA_KM2 = 60_000.0


def _aoi_folder() -> Path:
    """The authored AOI folder: `aoi/` of the repository, or its copy inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "aoi", here / "_aoi"):
        if candidate.is_dir():
            return candidate
    raise InputError("AOI folder not found: reinstall vigia (expected aoi/ beside imagery/)")


def builtin_names() -> list[str]:
    """Names of the AOIs shipped with Vigía."""
    return sorted(p.stem for p in _aoi_folder().glob("*.geojson"))


@dataclass(frozen=True)
class AOI:
    """A named area of interest in EPSG:4326 (lon/lat)."""

    name: str
    geometry: Polygon | MultiPolygon

    @property
    def area_km2(self) -> float:
        """Geodesic-ish area from the UTM projection of the AOI."""
        from pyproj import Transformer
        from shapely.ops import transform

        to_utm = Transformer.from_crs(4326, self.utm_crs(), always_xy=True).transform
        return float(transform(to_utm, self.geometry).area) / 1e6

    def utm_crs(self) -> CRS:
        """The WGS 84 / UTM zone holding the AOI centroid (EPSG:32718 for Lima)."""
        c = self.geometry.centroid
        zone = int(math.floor((c.x + 180.0) / 6.0)) % 60 + 1
        return CRS.from_epsg((32600 if c.y >= 0 else 32700) + zone)

    def to_geojson(self) -> dict[str, object]:
        """A GeoJSON geometry dict (lon/lat)."""
        return dict(mapping(self.geometry))


def from_geometry(name: str, geometry: BaseGeometry, source: str) -> AOI:
    """Validate a lon/lat geometry as an AOI; `source` names it in error messages."""
    if geometry.is_empty:
        raise InputError(f"AOI {source}: geometry is empty, expected a polygon")
    if not geometry.is_valid:
        geometry = make_valid(geometry)
    polys = [g for g in getattr(geometry, "geoms", [geometry]) if isinstance(g, Polygon | MultiPolygon)]
    if not polys:
        raise InputError(
            f"AOI {source}: geometry is a {geometry.geom_type}, expected a Polygon or MultiPolygon"
        )
    geom = unary_union(polys)
    if not isinstance(geom, Polygon | MultiPolygon) or geom.is_empty:
        raise InputError(f"AOI {source}: expected a polygon with an area")
    minx, miny, maxx, maxy = geom.bounds
    if not box(-180, -90, 180, 90).contains(geom):
        raise InputError(
            f"AOI {source}: coordinates {geom.bounds} are not lon/lat degrees "
            "(give the file a CRS or use EPSG:4326)"
        )
    aoi = AOI(name=name, geometry=geom)
    area = aoi.area_km2
    if not MIN_AREA_KM2 <= area <= MAX_AREA_KM2:
        raise InputError(
            f"AOI {source}: area {area:.3g} km2 is outside the accepted "
            f"{MIN_AREA_KM2}..{MAX_AREA_KM2:.0f} km2"
        )
    return aoi


def load_aoi(name_or_path: str | Path) -> AOI:
    """An AOI by built-in name (`lima_callao`, `lima`, `callao`) or from a GeoJSON/GPKG/SHP path."""
    text = str(name_or_path)
    path = Path(text)
    if not path.exists():
        builtin = _aoi_folder() / f"{text}.geojson"
        if builtin.exists():
            path = builtin
        else:
            raise InputError(
                f"AOI {text}: no such file, and not a built-in AOI name "
                f"(expected one of {', '.join(builtin_names())} or a GeoJSON/GPKG/SHP path)"
            )
    import geopandas as gpd

    try:
        frame = gpd.read_file(path)
    except Exception as exc:
        raise InputError(f"AOI {path}: cannot read it as a vector layer ({type(exc).__name__})") from None
    if frame.empty:
        raise InputError(f"AOI {path}: the layer has no features, expected a polygon")
    if frame.crs is None:
        raise InputError(f"AOI {path}: the layer has no CRS, expected one (e.g. EPSG:4326)")
    frame = frame.to_crs(4326)
    geoms = [shape(mapping(g)) for g in frame.geometry if g is not None and not g.is_empty]
    if not geoms:
        raise InputError(f"AOI {path}: all geometries are empty, expected a polygon")
    return from_geometry(path.stem, unary_union(geoms), str(path))
