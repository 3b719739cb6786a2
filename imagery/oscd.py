"""Run and score Vigía (or the CVA+Otsu baseline) on an OSCD-style folder of labelled cities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox

from imagery.baseline import cva_otsu
from imagery.config import load_settings
from imagery.errors import InputError
from imagery.evaluate import Scores, evaluate, score_arrays
from imagery.sentinel2 import BAND_RESOLUTION_M
from imagery.sources.local import open_scene, read_scene_bands

ALL_BANDS = tuple(b for b in BAND_RESOLUTION_M if b != "SCL")


def cities(root: Path) -> list[Path]:
    """City folders under `root` that have before/, after/ and truth.tif."""
    if not root.is_dir():
        raise InputError(f"--dataset {root}: no such folder")
    found = [p for p in sorted(root.iterdir()) if (p / "truth.tif").exists() and (p / "before").is_dir()]
    if not found:
        raise InputError(f"--dataset {root}: no city folders with before/, after/ and truth.tif")
    return found


def run_city(city: Path, out: Path, config: Path | None = None) -> Scores:
    """`vigia detect` on one city (native grid of the before scene), scored against its truth."""
    from imagery.execute import detect
    from imagery.pipeline import plan_run
    from imagery.sources.local import LocalSource

    settings = load_settings(config)
    plan = plan_run(None, [open_scene(city / "before")], [open_scene(city / "after")], settings)
    outputs = detect(plan, LocalSource(city), out)
    return evaluate(outputs["change_class"], city / "truth.tif")


def baseline_city(city: Path) -> Scores:
    """The CVA+Otsu baseline over all 13 bands, on the truth grid."""
    with rasterio.open(city / "truth.tif") as src:
        truth = src.read(1)
        gbox = GeoBox.from_rio(src)
    stacks = []
    for period in ("before", "after"):
        scene = open_scene(city / period)
        bands = read_scene_bands(scene, [b for b in ALL_BANDS if b in scene.assets], gbox)
        stacks.append(np.stack(list(bands.values())))
    changed = cva_otsu(stacks[0], stacks[1])
    return score_arrays(np.where(changed, 1, 0).astype(np.uint8), truth)


def evaluate_dataset(
    root: Path, out: Path, *, method: str = "vigia", config: Path | None = None
) -> dict[str, Scores]:
    """Scores per city for `method` ('vigia' or 'cva-otsu')."""
    if method not in {"vigia", "cva-otsu"}:
        raise InputError(f"--method {method}: expected 'vigia' or 'cva-otsu'")
    results = {}
    for city in cities(root):
        if method == "vigia":
            results[city.name] = run_city(city, out / city.name, config)
        else:
            results[city.name] = baseline_city(city)
    return results
