"""Scenes on disk: a folder of per-band files named the Sentinel-2 way, or one multi-band GeoTIFF."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Protocol

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.errors import RasterioError
from rasterio.warp import transform_geom
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from imagery.aoi import AOI
from imagery.errors import InputError
from imagery.sentinel2 import BAND_RESOLUTION_M, band_from_filename, boa_offset, date_from_name
from imagery.sources.base import Scene
from imagery.sources.raster import read_band, to_reflectance

_RASTER_SUFFIXES = {".tif", ".tiff", ".jp2"}
_DESCRIPTION = re.compile(r"^B?(0?[1-9]|1[0-2]|8A)$", re.I)


def _band_from_description(text: str | None) -> str | None:
    """'B02', 'B2', '2', 'B8A' or 'SCL' as written in a GeoTIFF band description."""
    if not text:
        return None
    text = text.strip().upper()
    if text == "SCL":
        return "SCL"
    match = _DESCRIPTION.match(text)
    if not match:
        return None
    num = match.group(1).upper()
    return "B8A" if num == "8A" else f"B{int(num):02d}"


def _resolution_from_name(path: Path, band: str) -> int:
    match = re.search(r"_(10|20|60)m\.", path.name)
    return int(match.group(1)) if match else BAND_RESOLUTION_M.get(band, 10)


def _footprint(path: Path) -> BaseGeometry:
    """The raster's bounds as a lon/lat polygon."""
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InputError(f"{path}: has no CRS, expected a georeferenced GeoTIFF/JP2")
            geom = transform_geom(src.crs, "EPSG:4326", box(*src.bounds).__geo_interface__)
            return shape(geom)
    except RasterioError as exc:
        raise InputError(f"{path}: not a readable GeoTIFF/JP2 ({str(exc).splitlines()[0]})") from None


def _read_tags(path: Path) -> dict[str, str]:
    with rasterio.open(path) as src:
        return {k.upper(): v for k, v in src.tags().items()}


def _level(name: str, has_scl: bool, tags: dict[str, str]) -> str:
    text = name.upper()
    if "L2A" in text or tags.get("PROCESSING_LEVEL", "").upper().endswith("2A"):
        return "L2A"
    if "L1C" in text or tags.get("PROCESSING_LEVEL", "").upper().endswith("1C"):
        return "L1C"
    return "L2A" if has_scl else "L1C"


def _baseline(name: str, tags: dict[str, str]) -> str | None:
    if "PROCESSING_BASELINE" in tags:
        return tags["PROCESSING_BASELINE"]
    match = re.search(r"_N(\d{2})(\d{2})_", name)
    return f"{int(match[1]):02d}.{match[2]}" if match else None


def _folder_assets(folder: Path) -> dict[str, str]:
    """Band -> finest-resolution file in a scene folder."""
    found: dict[str, tuple[int, Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in _RASTER_SUFFIXES or not path.is_file():
            continue
        band = band_from_filename(path.name)
        if band is None:
            continue
        res = _resolution_from_name(path, band)
        if band not in found or res < found[band][0]:
            found[band] = (res, path)
    return {band: str(path) for band, (_, path) in found.items()}


def _multiband_assets(path: Path) -> tuple[dict[str, str], dict[str, int]]:
    try:
        with rasterio.open(path) as src:
            names = [_band_from_description(d) for d in src.descriptions]
    except RasterioError as exc:
        raise InputError(f"{path}: not a readable GeoTIFF ({str(exc).splitlines()[0]})") from None
    index = {name: i + 1 for i, name in enumerate(names) if name}
    if not index:
        raise InputError(
            f"{path}: band descriptions do not name Sentinel-2 bands (expected e.g. B02, B03, B04)"
        )
    return {name: str(path) for name in index}, index


def open_scene(path: str | Path, *, acquired: date | None = None) -> Scene:
    """Describe a local scene (folder of band files or multi-band GeoTIFF) without reading pixels."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"scene {path}: no such file or folder")
    if path.is_dir():
        assets, index = _folder_assets(path), dict[str, int]()
        if not assets:
            raise InputError(
                f"scene {path}: no band files found (expected names like *_B02.tif or *_B04_10m.jp2)"
            )
    else:
        assets, index = _multiband_assets(path)
    first = Path(next(iter(assets.values())))
    tags = _read_tags(first)
    for band, href in assets.items():
        if band != "SCL" and Path(href) != first:
            _footprint(Path(href))  # every band file must open: fail here, not mid-run
    when = acquired or date_from_name(first.name) or date_from_name(path.name)
    if when is None and "ACQUISITION_DATE" in tags:
        when = date.fromisoformat(tags["ACQUISITION_DATE"][:10])
    if when is None:
        raise InputError(
            f"scene {path}: acquisition date unknown (expected YYYYMMDDTHHMMSS in the file names "
            "or an ACQUISITION_DATE tag)"
        )
    level = _level(path.name + first.name, "SCL" in assets, tags)
    baseline = _baseline(path.name + first.name, tags)
    offset = float(tags["BOA_ADD_OFFSET"]) if "BOA_ADD_OFFSET" in tags else boa_offset(baseline, level)
    cloud = float(tags["CLOUD_COVER"]) if "CLOUD_COVER" in tags else None
    return Scene(
        id=path.stem if path.is_file() else path.name,
        source="local",
        acquired=when,
        level=level,
        processing_baseline=baseline,
        boa_offset=offset,
        cloud_cover=cloud,
        footprint_wkt=_footprint(first).wkt,
        assets=assets,
        band_index=index,
    )


def require_bands(scene: Scene, bands: Sequence[str]) -> None:
    """Fail with one line when a scene lacks a band the run needs."""
    missing = [b for b in bands if b not in scene.assets]
    if missing:
        raise InputError(
            f"scene {scene.id}: missing band(s) {', '.join(missing)} "
            f"(found {', '.join(sorted(scene.assets)) or 'none'})"
        )


class RawBandReader(Protocol):
    """Reads one band of a scene onto a grid as raw digital numbers, into `out` when given (see
    `raster.read_band`)."""

    def __call__(self, scene: Scene, band: str, gbox: GeoBox, out: np.ndarray | None = None) -> np.ndarray:
        """The band's raw values on `gbox`."""
        ...


def read_raw_band(scene: Scene, band: str, gbox: GeoBox, out: np.ndarray | None = None) -> np.ndarray:
    """A band's raw values on `gbox`, read with GDAL from its asset (file or URL), into `out` when
    given (`raster.UnfitValues` when its type cannot hold them)."""
    href, index = scene.assets[band], scene.band_index.get(band, 1)
    return read_band(href, gbox, band=index, categorical=band == "SCL", out=out)


def read_scene_bands(
    scene: Scene,
    bands: Sequence[str],
    gbox: GeoBox,
    read_raw: RawBandReader = read_raw_band,
    out: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Bands of a scene resampled onto `gbox`: spectral bands as reflectance with the baseline
    offset removed (into out[i] when `out` is given), SCL as uint8. `read_raw` fetches the raw
    values (GDAL by default)."""
    require_bands(scene, bands)
    data: dict[str, np.ndarray] = {}
    for i, band in enumerate(bands):
        raw = read_raw(scene, band, gbox)
        if band == "SCL":
            data[band] = raw.astype(np.uint8, copy=False)
        else:
            data[band] = to_reflectance(raw, scene.boa_offset, out=None if out is None else out[i])
    return data


def read_scene_dn(
    scene: Scene,
    bands: Sequence[str],
    gbox: GeoBox,
    out: np.ndarray,
    read_raw: RawBandReader = read_raw_band,
) -> None:
    """Spectral `bands` of a scene on `gbox` as raw digital numbers into out[i] ((len(bands), y, x),
    uint16 for Sentinel-2; 0 no data): reflectance is (DN + scene.boa_offset) / QUANTIFICATION_VALUE,
    which `read_scene_bands` computes. `raster.UnfitValues` when a band's values are not integers
    that out's type holds (e.g. a float GeoTIFF): read those as reflectance instead."""
    require_bands(scene, bands)
    if "SCL" in bands:
        raise ValueError("read_scene_dn: SCL is not a spectral band")
    for i, band in enumerate(bands):
        read_raw(scene, band, gbox, out=out[i])


class LocalSource:
    """Scenes under a root folder: each sub-folder (or multi-band GeoTIFF) is one scene."""

    name = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def search(self, aoi: AOI, start: date, end: date, max_cloud: float = 100.0) -> list[Scene]:
        """Scenes in [start, end] intersecting the AOI with catalogue cloud cover <= max_cloud."""
        if not self.root.is_dir():
            raise InputError(f"local source {self.root}: no such folder")
        scenes = []
        for entry in sorted(self.root.iterdir()):
            if not (entry.is_dir() or entry.suffix.lower() in {".tif", ".tiff"}):
                continue
            when = date_from_name(entry.name)
            if when is not None and not start <= when <= end:
                continue
            scene = open_scene(entry)
            if not start <= scene.acquired <= end or not scene.footprint.intersects(aoi.geometry):
                continue
            if scene.cloud_cover is not None and scene.cloud_cover > max_cloud:
                continue
            scenes.append(scene)
        return sorted(scenes, key=lambda s: (s.acquired, s.id))

    def read(
        self, scene: Scene, bands: Sequence[str], gbox: GeoBox, out: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Bands resampled onto `gbox` (see `read_scene_bands`)."""
        return read_scene_bands(scene, bands, gbox, out=out)

    def read_dn(self, scene: Scene, bands: Sequence[str], gbox: GeoBox, out: np.ndarray) -> None:
        """Spectral bands resampled onto `gbox` as digital numbers (see `read_scene_dn`)."""
        read_scene_dn(scene, bands, gbox, out)
