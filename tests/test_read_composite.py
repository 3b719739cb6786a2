"""A period's composite is the same whether its looks are read as digital numbers or reflectance."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox

from imagery.aoi import AOI, from_geometry
from imagery.config import load_settings
from imagery.grid import run_geobox
from imagery.pipeline import read_composite
from imagery.sentinel2 import CHANGE_BANDS
from imagery.sources.base import DigitalNumberSource, Scene
from imagery.sources.local import LocalSource, open_scene
from tests.scenes import textured_reflectance, write_band, write_scene


class ReflectanceOnly:
    """A source that hands over reflectance only (as Sentinel Hub's Process API does)."""

    name = "reflectance-only"

    def __init__(self, source: LocalSource) -> None:
        self.source = source

    def search(self, aoi: AOI, start: date, end: date, max_cloud: float = 100.0) -> list[Scene]:
        """The wrapped source's scenes."""
        return self.source.search(aoi, start, end, max_cloud)

    def read(
        self, scene: Scene, bands: Sequence[str], gbox: GeoBox, out: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """The wrapped source's reflectance."""
        return self.source.read(scene, bands, gbox, out=out)


def _scenes(root: Path) -> list[Scene]:
    """Three looks with both baselines' offsets, clouds and a strip of no data."""
    scenes = []
    for i, (day, offset) in enumerate((("20240110", 0.0), ("20240120", -1000.0), ("20240130", -1000.0))):
        scl = np.full((40, 50), 4, np.uint8)
        scl[5 * i : 5 * i + 9, 10 + 7 * i : 25 + 7 * i] = 9  # a cloud
        scl[:, 45 - 3 * i :] = 0  # no data
        folder = root / f"S2B_MSIL2A_{day}_N0510_{i}"
        write_scene(folder, textured_reflectance((80, 100), seed=i), date=day, scl=scl, offset=offset)
        scenes.append(open_scene(folder))
    return scenes


def test_digital_numbers_and_reflectance_give_the_same_composite(tmp_path: Path) -> None:
    scenes = _scenes(tmp_path)
    source = LocalSource(tmp_path)
    assert isinstance(source, DigitalNumberSource) and not isinstance(
        ReflectanceOnly(source), DigitalNumberSource
    )
    gbox = run_geobox(from_geometry("t", scenes[0].footprint, "t"))[3:75, 2:97]
    settings = load_settings()
    got = read_composite(source, scenes, gbox, settings)
    want = read_composite(ReflectanceOnly(source), scenes, gbox, settings)
    np.testing.assert_array_equal(got.bands.view(np.uint32), want.bands.view(np.uint32))  # bit for bit
    np.testing.assert_array_equal(got.valid_looks, want.valid_looks)
    assert set(np.unique(got.valid_looks)) >= {0, 1, 2, 3}  # clouds and no data took looks away


def test_float_band_files_are_composited_as_reflectance(tmp_path: Path) -> None:
    scenes = _scenes(tmp_path)
    folder = Path(scenes[1].assets["B04"]).parent
    for band in CHANGE_BANDS:  # the middle look's bands as float DNs with fractions
        path = Path(scenes[1].assets[band])
        with rasterio.open(path) as src:
            dn, transform, tags = src.read(1).astype(np.float32) + 0.25, src.transform, src.tags()
        write_band(path, dn, transform, tags=tags)
    scenes[1] = open_scene(folder)
    source = LocalSource(tmp_path)
    gbox = run_geobox(from_geometry("t", scenes[0].footprint, "t"))[3:75, 2:97]
    settings = load_settings()
    got = read_composite(source, scenes, gbox, settings)
    want = read_composite(ReflectanceOnly(source), scenes, gbox, settings)
    np.testing.assert_array_equal(got.bands.view(np.uint32), want.bands.view(np.uint32))
    np.testing.assert_array_equal(got.valid_looks, want.valid_looks)
