"""Synthetic but realistic Lima/Callao demo scenes with planted, known changes (seeded).

Writes Sentinel-2 L2A-style per-band COGs on the real Lima grid (EPSG:32718): ocean, coast,
desert hills, river valleys with fields, dense city; two looks per period with clouds and
shadows flagged in SCL; a known sub-pixel misregistration of the after looks; the before
period on processing baseline 02.14 and the after period on 04.00 (BOA_ADD_OFFSET -1000); the
lomas greening and ocean glint that must not become man-made change; and `truth.tif`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.shutil import copy as rio_copy
from scipy import ndimage

from imagery.errors import InputError
from imagery.export import atomic_path

CRS = "EPSG:32718"
#: Upper-left corner (UTM 18S) and size of the demo area: Callao coast to the hills of the east.
ORIGIN = (262_000.0, 8_681_600.0)
SIZE_PX = 2560
RESOLUTION = 10.0
#: Misregistration of the after looks relative to the before looks (pixels, +x east, +y south).
AFTER_SHIFT_PX = (0.4, -0.3)
SEED = 20260214

BANDS_10M = ("B02", "B03", "B04", "B08")
BANDS_20M = ("B11", "B12")
#: Cover types and their reflectance in B02, B03, B04, B08, B11, B12.
SIGNATURES = {
    "water": (0.060, 0.050, 0.030, 0.015, 0.008, 0.005),
    "soil": (0.140, 0.180, 0.230, 0.280, 0.360, 0.310),
    "urban": (0.095, 0.105, 0.115, 0.160, 0.200, 0.185),
    "field": (0.040, 0.070, 0.045, 0.350, 0.200, 0.100),
    "dry_field": (0.075, 0.095, 0.105, 0.220, 0.270, 0.190),
    "lomas": (0.080, 0.110, 0.105, 0.320, 0.270, 0.190),
    "settlement": (0.110, 0.115, 0.130, 0.165, 0.190, 0.175),
    "rubble": (0.150, 0.170, 0.195, 0.235, 0.310, 0.280),
    "cleared": (0.160, 0.190, 0.225, 0.260, 0.340, 0.300),
}
COVERS = list(SIGNATURES)
#: Truth codes of the planted changes (same codes as change_class.tif).
TRUTH_SETTLEMENT, TRUTH_CLEARING, TRUTH_DEMOLITION, TRUTH_VEG_LOSS, TRUTH_VEG_GAIN = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Look:
    """One acquisition of the demo: date, platform, baseline, clouds."""

    date: str  # YYYYMMDD
    platform: str
    baseline: str  # "02.14" or "04.00"
    clouds: int  # number of cloud cells
    after: bool


LOOKS = (
    Look("20210202", "S2A", "02.14", 5, after=False),
    Look("20210212", "S2B", "02.14", 2, after=False),
    Look("20220207", "S2A", "04.00", 4, after=True),
    Look("20220217", "S2B", "04.00", 3, after=True),
)
#: The run date the demo's nightly flow uses: the after looks fall in the 30 days before it.
RUN_DATE = "2022-02-18"


def _fractal(shape: tuple[int, int], rng: np.random.Generator, beta: float) -> np.ndarray:
    """Zero-mean, unit-std noise with a 1/f^beta spectrum (smooth for large beta)."""
    white = rng.standard_normal(shape).astype(np.float32)
    fy = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spec = np.fft.rfft2(white) / f**beta
    spec[0, 0] = 0
    out = np.fft.irfft2(spec, s=shape).astype(np.float32)
    return (out - out.mean()) / (out.std() + 1e-12)


def _land_cover(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Cover index map of the before date (n x n px) and the masks used to plant changes."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    smooth = _fractal((n, n), rng, 2.2)
    coast = (420 + 120 * np.sin(yy / 380.0) + 60 * smooth) * (n / SIZE_PX)
    ocean = xx < coast
    hills = (xx > 0.68 * n + 160 * np.sin(yy / 300.0)) | (yy < 0.12 * n + 90 * smooth)
    river_rimac = np.abs((yy - 0.52 * n) - 0.18 * (xx - 0.5 * n) + 40 * np.sin(xx / 150.0)) < 70
    river_chillon = np.abs((yy - 0.22 * n) + 0.10 * (xx - 0.5 * n) + 30 * np.sin(xx / 120.0)) < 55
    fields = (river_rimac | river_chillon) & ~ocean & (_fractal((n, n), rng, 1.8) > -0.3)
    cover = np.full((n, n), COVERS.index("urban"), np.int8)
    cover[hills] = COVERS.index("soil")
    cover[fields] = COVERS.index("field")
    cover[ocean] = COVERS.index("water")
    lomas = hills & (_fractal((n, n), rng, 2.4) > 1.0) & ~ocean
    masks = {"ocean": ocean, "hills": hills & ~lomas & ~ocean, "fields": fields, "lomas": lomas,
             "urban": cover == COVERS.index("urban")}  # fmt: skip
    return cover, masks


def _blocks(rng: np.random.Generator, allowed: np.ndarray, count: int, size: tuple[int, int]) -> np.ndarray:
    """`count` rectangles of random size in `size` px placed where `allowed` holds entirely."""
    n = allowed.shape[0]
    out = np.zeros_like(allowed)
    placed = tries = 0
    while placed < count and tries < count * 200:
        tries += 1
        h, w = rng.integers(size[0], size[1], 2)
        r, c = rng.integers(20, n - 20 - h), rng.integers(20, n - 20 - w)
        if allowed[r : r + h, c : c + w].all() and not out[r - 8 : r + h + 8, c - 8 : c + w + 8].any():
            out[r : r + h, c : c + w] = True
            placed += 1
    return out


def _plant_changes(
    rng: np.random.Generator, cover: np.ndarray, masks: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """After-date cover and the truth raster of planted changes."""
    after = cover.copy()
    truth = np.zeros(cover.shape, np.uint8)
    plan = (
        ("hills", 14, (8, 26), "settlement", TRUTH_SETTLEMENT),   # land invasions on the hills
        ("fields", 8, (6, 18), "cleared", TRUTH_CLEARING),        # cleared land in the valleys
        ("urban", 8, (5, 14), "rubble", TRUTH_DEMOLITION),        # demolished blocks
        ("fields", 6, (6, 16), "dry_field", TRUTH_VEG_LOSS),      # vegetation loss
    )  # fmt: skip
    taken = np.zeros(cover.shape, bool)
    for where, count, size, new_cover, code in plan:
        patch = _blocks(rng, masks[where] & ~taken, count, size)
        after[patch] = COVERS.index(new_cover)
        truth[patch] = code
        taken |= ndimage.binary_dilation(patch, iterations=10)
    after[masks["lomas"]] = COVERS.index("lomas")  # seasonal greening of the hills
    truth[masks["lomas"]] = TRUTH_VEG_GAIN
    return after, truth


def _reflectance(cover: np.ndarray, texture: np.ndarray, roofs: np.ndarray) -> np.ndarray:
    """(6, y, x) float32 reflectance of a cover map with its per-pixel texture."""
    sig = np.asarray([SIGNATURES[c] for c in COVERS], np.float32)  # (covers, 6)
    refl = sig[cover.astype(np.intp)].transpose(2, 0, 1).copy()
    built = np.isin(cover, [COVERS.index("urban"), COVERS.index("settlement")])
    refl *= 1.0 + 0.06 * texture[None]
    refl[:, built] *= 1.0 + 0.22 * roofs[built][None]
    return refl


def _clouds(rng: np.random.Generator, count: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Cloud and cloud-shadow masks (shadow offset to the south-west, as from a NE sun); cloud
    sizes scale with the scene edge `n` so a small demo is not all cloud."""
    scale = n / SIZE_PX
    field = np.zeros((n, n), np.float32)
    yy, xx = np.ogrid[0:n, 0:n]
    for _ in range(count):
        cy, cx, rad = rng.integers(100, n - 100), rng.integers(100, n - 100), rng.integers(40, 120) * scale
        field += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * rad**2)).astype(np.float32)
    cloud = field > 0.5
    shadow = np.roll(np.roll(cloud, 60, axis=0), -45, axis=1) & ~cloud
    return cloud, shadow


def _scl(cover: np.ndarray, cloud: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """A 10 m scene classification layer: 6 water, 5 bare, 4 vegetation, 8/9 cloud, 3 shadow."""
    scl = np.full(cover.shape, 5, np.uint8)
    scl[np.isin(cover, [COVERS.index(c) for c in ("field", "lomas", "dry_field")])] = 4
    scl[cover == COVERS.index("water")] = 6
    scl[shadow] = 3
    scl[cloud] = 9
    return scl


def _to_dn(refl: np.ndarray, offset: float) -> np.ndarray:
    return np.clip(np.round(refl * 10000.0 - offset), 1, 65535).astype(np.uint16)


def _write_cog(path: Path, data: np.ndarray, transform: Affine, tags: dict[str, str]) -> None:
    profile = {
        "driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
        "dtype": data.dtype.name, "crs": CRS, "transform": transform, "nodata": 0,
    }  # fmt: skip
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(data, 1)
            ds.update_tags(**tags)
        with atomic_path(path) as tmp:
            rio_copy(mem.name, tmp, driver="COG", COMPRESS="DEFLATE", PREDICTOR=2, BLOCKSIZE=512)


def _downsample(a: np.ndarray) -> np.ndarray:
    """2 x 2 block mean (10 m -> 20 m)."""
    n = a.shape[0] // 2
    return a[: 2 * n, : 2 * n].reshape(n, 2, n, 2).mean(axis=(1, 3))


def _scl_20m(scl: np.ndarray) -> np.ndarray:
    """10 m SCL -> 20 m: cloud wins, then shadow, else the upper-left class (as Sen2Cor flags)."""
    n = scl.shape[0] // 2
    blocks = scl[: 2 * n, : 2 * n].reshape(n, 2, n, 2)
    out = blocks[:, 0, :, 0].copy()
    out[(blocks == 3).any(axis=(1, 3))] = 3
    out[(blocks == 9).any(axis=(1, 3))] = 9
    return out


def _fourier_shift(band: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Content moved by (dx, dy) pixels (+x east, +y south), periodic edges."""
    spec = ndimage.fourier_shift(np.fft.rfft2(band), (dy, dx), n=band.shape[1])
    return np.fft.irfft2(spec, s=band.shape).astype(np.float32)


def generate(folder: Path, *, seed: int = SEED, size_px: int = SIZE_PX) -> Path:
    """Write the demo scenes and truth under `folder` (skipped when already complete); `size_px`
    (>= 256) shrinks the square area from its north-west corner for quick test runs."""
    marker = folder / "demo.json"
    if marker.exists():
        return folder
    if size_px < 256:
        raise InputError(f"demo size {size_px}: expected at least 256 pixels")
    rng = np.random.default_rng(seed)
    cover, masks = _land_cover(rng, size_px)
    cover_after, truth = _plant_changes(rng, cover, masks)
    texture = _fractal(cover.shape, rng, 1.2)
    roofs = _fractal(cover.shape, rng, 0.3)
    transform = Affine(RESOLUTION, 0, ORIGIN[0], 0, -RESOLUTION, ORIGIN[1])
    invalid_any = np.zeros(cover.shape, bool)
    glint = np.clip(_fractal(cover.shape, rng, 2.0), 0, None) * masks["ocean"]
    masked_by_period: dict[bool, list[np.ndarray]] = {False: [], True: []}
    for look in LOOKS:
        refl = _reflectance(cover_after if look.after else cover, texture, roofs)
        if look.after:
            refl *= np.asarray([1.04, 1.03, 1.02, 0.97, 0.98, 0.99], np.float32)[:, None, None]
            refl += np.float32(0.004)
            refl += (0.05 * glint)[None].astype(np.float32)  # sun glint on the ocean
        refl += rng.normal(0, 0.003, refl.shape).astype(np.float32)
        if look.after:
            refl = np.stack([_fourier_shift(b, *AFTER_SHIFT_PX) for b in refl])
        cloud, shadow = _clouds(rng, look.clouds, size_px)
        refl[:, shadow] *= 0.35
        refl[:, cloud] = 0.45 + 0.1 * np.asarray([1.0, 1.0, 1.0, 1.1, 0.8, 0.6], np.float32)[:, None]
        masked_by_period[look.after].append(ndimage.binary_dilation(cloud | shadow, iterations=4))
        _write_look(folder / "scenes", look, refl, _scl(cover, cloud, shadow), transform)
    for period in (False, True):
        invalid_any |= np.logical_and.reduce(masked_by_period[period])
    truth[invalid_any] = 255
    _write_truth(folder / "truth.tif", truth, transform)
    info = {
        "crs": CRS, "origin": ORIGIN, "size_px": size_px, "seed": seed,
        "after_shift_px": {"dx": AFTER_SHIFT_PX[0], "dy": AFTER_SHIFT_PX[1]}, "run_date": RUN_DATE,
        "looks": [look.__dict__ for look in LOOKS],
        "truth_codes": {"1": "new settlement", "2": "cleared land", "3": "demolition",
                        "4": "vegetation loss", "5": "lomas greening (not man-made)", "255": "no valid look"},
    }  # fmt: skip
    marker.write_text(json.dumps(info, indent=2) + "\n")
    return folder


def _write_look(root: Path, look: Look, refl: np.ndarray, scl: np.ndarray, transform: Affine) -> None:
    offset = -1000.0 if look.baseline >= "04.00" else 0.0
    baseline = look.baseline.replace(".", "")
    name = f"{look.platform}_MSIL2A_{look.date}T152639_N{baseline}_R025_T18LTM_{look.date}T190000"
    folder = root / name
    tags = {
        "PROCESSING_LEVEL": "Level-2A", "PROCESSING_BASELINE": look.baseline,
        "BOA_ADD_OFFSET": str(offset),
        "ACQUISITION_DATE": f"{look.date[:4]}-{look.date[4:6]}-{look.date[6:]}",
        "SPACECRAFT_NAME": f"Sentinel-2{look.platform[-1]}", "DEMO": "synthetic, see demo.json",
    }  # fmt: skip
    prefix = f"T18LTM_{look.date}T152639"
    order = (*BANDS_10M, *BANDS_20M)
    for i, band in enumerate(order):
        if band in BANDS_10M:
            data, tr = _to_dn(refl[i], offset), transform
        else:
            data, tr = _to_dn(_downsample(refl[i]), offset), transform * Affine.scale(2)
            band = f"{band}_20m"
        _write_cog(folder / f"{prefix}_{band}.tif", data, tr, tags)
    _write_cog(folder / f"{prefix}_SCL_20m.tif", _scl_20m(scl), transform * Affine.scale(2), tags)


def _write_truth(path: Path, truth: np.ndarray, transform: Affine) -> None:
    profile = {
        "driver": "GTiff", "width": truth.shape[1], "height": truth.shape[0], "count": 1,
        "dtype": "uint8", "crs": CRS, "transform": transform, "nodata": 255,
        "compress": "deflate", "tiled": True,
    }  # fmt: skip
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as ds:
        ds.write(truth, 1)
