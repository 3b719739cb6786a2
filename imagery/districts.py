"""District boundary layers: read any vector file a GIS user has and keep just name, code and shape."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
from shapely.geometry.base import BaseGeometry

from imagery.config import LayerParams
from imagery.errors import InputError
from imagery.hotspots import summarise_by

#: Attribute names tried, in order, when the settings do not name the fields (INEI and common forms).
NAME_FIELDS = ("NOMBDIST", "DISTRITO", "NOMBRE", "NOMDIST", "name", "NAME")
CODE_FIELDS = ("IDDIST", "UBIGEO", "ubigeo", "CODIGO", "CCDIST", "code")
SUMMARY_COLUMNS = ["district", "ubigeo", "count", "area_m2", "score_max"]


def _field(label: str, columns: list[str], wanted: str | None, candidates: tuple[str, ...]) -> str | None:
    """The attribute asked for (must exist), else the first candidate present, else None."""
    if wanted is not None:
        if wanted not in columns:
            raise InputError(f"{label}: no attribute {wanted!r} (has {', '.join(columns)})")
        return wanted
    return next((c for c in candidates if c in columns), None)


def load_districts(
    path: Path, name_field: str | None = None, code_field: str | None = None, *, what: str = "districts"
) -> gpd.GeoDataFrame:
    """District polygons as columns `district`, `ubigeo`, `geometry` (source CRS kept); features
    without geometry are skipped (listed in `.attrs`). Errors name `what` (the parameter) and the file.

    A file without a code attribute is accepted when no code field is asked for (ubigeo empty)."""
    label = f"{what} {path}"
    if not path.exists():
        raise InputError(f"{label}: no such file")
    try:
        frame = gpd.read_file(path)
    except Exception:
        raise InputError(f"{label}: not a readable vector layer") from None
    if frame.crs is None:
        raise InputError(f"{label}: expected polygons with a CRS, the file has no CRS")
    columns = [c for c in frame.columns if c != frame.geometry.name]
    name = _field(label, columns, name_field, NAME_FIELDS)
    if name is None:
        raise InputError(
            f"{label}: no district name attribute (expected one of {', '.join(NAME_FIELDS)}; "
            "or set layers.district_name_field)"
        )
    code = _field(label, columns, code_field, CODE_FIELDS)
    missing = frame.geometry.isna() | frame.geometry.is_empty
    skipped = sorted(frame.loc[missing, name].astype(str))
    frame = frame[~missing]
    if frame.empty:
        raise InputError(f"{label}: expected polygons, the layer has no geometries")
    kinds = set(frame.geom_type)
    if not kinds <= {"Polygon", "MultiPolygon"}:
        raise InputError(f"{label}: expected polygons, found {', '.join(sorted(kinds))}")
    out = gpd.GeoDataFrame(
        {
            "district": frame[name].astype(str),
            "ubigeo": frame[code].astype(str) if code else None,
        },
        geometry=frame.geometry.where(frame.geometry.is_valid, frame.geometry.buffer(0)),
        crs=frame.crs,
    )
    out.attrs["source"] = str(path)
    out.attrs["skipped_without_geometry"] = skipped
    return out


def district_summary(
    districts: gpd.GeoDataFrame, hotspots: gpd.GeoDataFrame, extent: BaseGeometry, crs: object
) -> gpd.GeoDataFrame:
    """The districts touching the run extent (in `crs`), each with its hotspot count, total hotspot
    area and top score: the per-district table of the report, as a map layer."""
    local = districts.to_crs(crs)
    local = local[local.intersects(extent)].copy()
    key = "ubigeo" if local["ubigeo"].notna().all() else "district"  # names can repeat, codes do not
    stats = summarise_by(hotspots, [key]).set_index(key)
    local["count"] = local[key].map(stats["count"]).fillna(0).astype(int)
    local["area_m2"] = local[key].map(stats["area_m2"]).fillna(0.0).astype(float).round(1)
    local["score_max"] = local[key].map(stats["score_max"]).astype(float)
    local = local.sort_values(["area_m2", "district"], ascending=[False, True])
    return local[[*SUMMARY_COLUMNS, "geometry"]].reset_index(drop=True)


def configured_districts(
    layers: LayerParams, override: Path | None = None, *, override_name: str = "--districts"
) -> gpd.GeoDataFrame | None:
    """The district layer a run uses: `override` (named `override_name` in errors) else the
    settings' districts_file; None when neither is set (hotspots then carry no district)."""
    path, what = (override, override_name) if override else (layers.districts_file, "layers.districts_file")
    if path is None:
        return None
    return load_districts(Path(path), layers.district_name_field, layers.district_code_field, what=what)
