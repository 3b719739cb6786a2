"""Write tiny Sentinel-2-style scenes for tests (real GeoTIFF files through GDAL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from imagery.sentinel2 import CHANGE_BANDS

UTM_ORIGIN = (280_000.0, 8_670_000.0)


def write_band(
    path: Path,
    data: np.ndarray,
    transform: Affine,
    crs: str = "EPSG:32718",
    tags: dict[str, str] | None = None,
    driver: str = "GTiff",
    block_px: int | None = None,
) -> Path:
    """One band file (tiled in `block_px` square blocks when given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver=driver,
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
        **({"tiled": True, "blockxsize": block_px, "blockysize": block_px} if block_px else {}),
    ) as ds:
        ds.write(data, 1)
        if tags:
            ds.update_tags(**tags)
    return path


def textured_reflectance(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(6, y, x) float32 reflectance with smooth texture, like a mix of soil and city."""
    rng = np.random.default_rng(seed)
    base = np.asarray([0.10, 0.12, 0.14, 0.25, 0.28, 0.22], np.float32)[:, None, None]
    texture = rng.standard_normal(shape).astype(np.float32)
    from scipy import ndimage

    texture = ndimage.gaussian_filter(texture, 2.0)
    texture /= texture.std()
    return base * (1 + 0.15 * texture[None]) + rng.normal(0, 0.002, (6, *shape)).astype(np.float32)


def write_scene(
    folder: Path,
    reflectance: np.ndarray,
    *,
    date: str = "20240110",
    origin: tuple[float, float] = UTM_ORIGIN,
    scl: np.ndarray | None = None,
    offset: float = 0.0,
    skip: tuple[str, ...] = (),
) -> Path:
    """A scene folder: 10 m bands B02-B08, 20 m B11/B12 (2x2 means) and optional 20 m SCL."""
    t10 = Affine(10, 0, origin[0], 0, -10, origin[1])
    t20 = t10 * Affine.scale(2)
    prefix = f"T18LTM_{date}T152639"
    tags = {"BOA_ADD_OFFSET": str(offset)}
    for i, band in enumerate(CHANGE_BANDS):
        if band in skip:
            continue
        data = reflectance[i]
        if band in ("B11", "B12"):
            h, w = data.shape[0] // 2, data.shape[1] // 2
            data = data[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))
            name, tr = f"{prefix}_{band}_20m.tif", t20
        else:
            name, tr = f"{prefix}_{band}.tif", t10
        dn = np.clip(np.round(data * 10000 - offset), 1, 65535).astype(np.uint16)
        write_band(folder / name, dn, tr, tags=tags)
    if scl is not None:
        write_band(folder / f"{prefix}_SCL_20m.tif", scl.astype(np.uint8), t20, tags=tags)
    return folder
