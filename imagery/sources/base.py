"""What every scene source provides: catalogue search and band reads onto a grid."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Protocol, runtime_checkable

import numpy as np
from odc.geo.geobox import GeoBox
from pydantic import BaseModel, ConfigDict
from shapely import wkt
from shapely.geometry.base import BaseGeometry

from imagery.aoi import AOI


class Scene(BaseModel):
    """One Sentinel-2 acquisition as a source sees it: identity, date, level, band locations."""

    model_config = ConfigDict(frozen=True)

    id: str
    source: str
    acquired: date
    level: str  # "L1C" or "L2A"
    processing_baseline: str | None = None
    boa_offset: float = 0.0  # DN offset to add before scaling (-1000 from baseline 04.00)
    cloud_cover: float | None = None
    footprint_wkt: str  # lon/lat (EPSG:4326)
    assets: dict[str, str]  # band name -> file path or URL ("B02" -> ".../B02.tif")
    band_index: dict[str, int] = {}  # band name -> 1-based band in a multi-band asset
    granules: tuple[str, ...] = ()  # catalogue items merged into this scene (same-day granules)

    @property
    def footprint(self) -> BaseGeometry:
        """Scene outline in lon/lat."""
        return wkt.loads(self.footprint_wkt)

    @property
    def has_scl(self) -> bool:
        """Whether a scene classification layer (cloud mask) is available."""
        return "SCL" in self.assets


class SceneSource(Protocol):
    """A catalogue of scenes plus a reader that puts their bands on any grid."""

    name: str

    def search(self, aoi: AOI, start: date, end: date, max_cloud: float = 100.0) -> list[Scene]:
        """Scenes acquired in [start, end] that intersect the AOI, oldest first."""
        ...

    def read(
        self, scene: Scene, bands: Sequence[str], gbox: GeoBox, out: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Bands resampled onto `gbox`: spectral as float32 reflectance (NaN no data), SCL uint8.
        With `out` ((len(bands), y, x) float32) spectral band i is written into out[i] and returned
        as that view: a caller's stack is filled without a copy."""
        ...


@runtime_checkable
class DigitalNumberSource(SceneSource, Protocol):
    """A source that can also hand over the raw digital numbers of its bands (local files and STAC
    COGs can; Sentinel Hub's Process API returns reflectance): a period's looks are then kept as
    uint16, half the bytes of float32 reflectance, and turned into reflectance by the composite."""

    def read_dn(self, scene: Scene, bands: Sequence[str], gbox: GeoBox, out: np.ndarray) -> None:
        """Spectral `bands` resampled onto `gbox` as digital numbers into out[i] ((len(bands), y, x)
        uint16; 0 no data); reflectance is (DN + scene.boa_offset) / QUANTIFICATION_VALUE.
        `raster.UnfitValues` when a band's values are not integers that out's type holds: read
        them with `read` instead."""
        ...
