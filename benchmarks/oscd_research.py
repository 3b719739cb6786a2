"""Research harness: the change detector on the real OSCD cities, scored against their truth.

Reads each city straight from the OSCD GeoTIFFs with rasterio: every band of both dates is
resampled (bilinear) onto the grid of ``before/*_B02.tif``, which is also the truth grid
(for abudhabi and hongkong the after image lies on a slightly different grid). Runs the same
public functions the pipeline calls (fit on the whole city, which is small), applies the
minimum mapping unit the way the pipeline does (``imagery.change.apply_min_mapping_unit``) and
prints per-city and pooled precision / recall / F1 / IoU of classes 1-3 against the truth,
pooled over all pixels of all cities, next to the CVA+Otsu reference computed here too.

    python benchmarks/oscd_research.py [--data ../shared/data/oscd-dev] [--cities a,b] \
        [--set key=value ...]

``--set`` overrides a DetectorParams field (research only; the defaults are what count).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imagery.change import (  # noqa: E402
    DetectorParams,
    apply_min_mapping_unit,
    change_classes,
    change_score,
    fit_change_model,
)
from imagery.config import ChangeParams  # noqa: E402
from imagery.normalize import apply_normalization, fit_normalization  # noqa: E402
from imagery.sentinel2 import CHANGE_BANDS  # noqa: E402

ALL_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
             "B12")  # fmt: skip
CITIES = ("abudhabi", "aguasclaras", "bordeaux", "hongkong", "nantes", "paris", "rennes")
NOMINAL_PX_M = 10.0
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "oscd-dev"


def _band_file(folder: Path, band: str) -> Path:
    hits = sorted(folder.glob(f"*_{band}.tif"))
    if not hits:
        raise SystemExit(f"{folder}: no *_{band}.tif")
    return hits[0]


def load_city(data: Path, city: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(before, after) float32 (13, H, W) TOA reflectance on the before-B02 grid, truth, pixel m."""
    cdir = data / city
    with rasterio.open(cdir / "truth.tif") as ds:
        truth = ds.read(1)
        dst_transform, dst_crs, shape = ds.transform, ds.crs, ds.shape
    out = []
    for period in ("before", "after"):
        stack = np.empty((len(ALL_BANDS), *shape), np.float32)
        for i, band in enumerate(ALL_BANDS):
            with rasterio.open(_band_file(cdir / period, band)) as ds:
                src = ds.read(1).astype(np.float32)
                reproject(
                    src,
                    stack[i],
                    src_transform=ds.transform,
                    src_crs=ds.crs,
                    dst_transform=dst_transform,
                    dst_crs=dst_crs,
                    src_nodata=0,
                    dst_nodata=np.nan,
                    resampling=Resampling.bilinear,
                )
        stack /= 10000.0
        out.append(stack)
    # OSCD grids are geographic but the imagery is Sentinel-2 10 m: the MMU is counted in
    # 10 m pixels, as the pipeline does on its 10 m UTM grid (0.2 ha = 20 px)
    return out[0], out[1], (truth > 0).astype(np.uint8), NOMINAL_PX_M


def cva_otsu_baseline(before13: np.ndarray, after13: np.ndarray) -> np.ndarray:
    """Reference: CVA over all 13 z-scored band differences, one Otsu threshold."""
    from skimage.filters import threshold_otsu

    diff = after13 - before13
    valid = np.all(np.isfinite(diff), axis=0)
    mag2 = np.zeros(valid.shape, np.float32)
    for d in diff:
        v = d[valid]
        mag2[valid] += ((v - v.mean()) / (v.std() + 1e-12)) ** 2
    mag = np.sqrt(mag2)
    return (valid & (mag > threshold_otsu(mag[valid]))).astype(np.uint8)


def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    return _metrics(tp, fp, fn)


def _metrics(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    iou = tp / (tp + fp + fn) if tp + fp + fn else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r, "f1": f1, "iou": iou}


def run_city(
    before13: np.ndarray, after13: np.ndarray, params: ChangeParams, px_m: float
) -> tuple[np.ndarray, np.ndarray]:
    idx = [ALL_BANDS.index(b) for b in CHANGE_BANDS]
    before, after = before13[idx], after13[idx]
    norm = fit_normalization(before, after)
    after_n = apply_normalization(after, norm)
    model = fit_change_model(before, after_n, params)
    score = change_score(before, after_n, model, params)
    classes = change_classes(before, after_n, score, model, params)
    min_px = round(params.min_mapping_unit_ha * 10_000 / (px_m * px_m))
    classes = apply_min_mapping_unit(classes, min_px)
    return score, classes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("VIGIA_OSCD", DEFAULT_DATA)))
    ap.add_argument("--cities", default=",".join(CITIES))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--cache", type=Path, default=None, help="npz cache folder for loaded cities")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = ap.parse_args(argv)
    overrides: dict[str, Any] = {}
    for kv in args.set:
        key, value = kv.split("=", 1)
        overrides[key] = json.loads(value)
    params = ChangeParams(model=DetectorParams(**overrides).model_dump())
    rows: dict[str, dict[str, Any]] = {}
    tot = {"ours": [0, 0, 0], "base": [0, 0, 0]}
    print(
        f"{'city':12s} {'P':>6s} {'R':>6s} {'F1':>6s} {'IoU':>6s} | {'base F1':>7s} "
        f"{'changed%':>8s} {'sec':>5s}"
    )
    for city in args.cities.split(","):
        cached = args.cache / f"{city}.npz" if args.cache else None
        if cached is not None and cached.exists():
            z = np.load(cached)
            b13, a13, truth, px_m = z["b"], z["a"], z["t"], float(z["px"])
        else:
            b13, a13, truth, px_m = load_city(args.data, city)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cached, b=b13, a=a13, t=truth, px=px_m)
        t = truth.astype(bool)
        t0 = time.perf_counter()
        _, classes = run_city(b13, a13, params, px_m)
        dt = time.perf_counter() - t0
        pred = (classes >= 1) & (classes <= 3)
        ours = scores(pred, t)
        base = scores(cva_otsu_baseline(b13, a13).astype(bool), t)
        for key, s in (("ours", ours), ("base", base)):
            tot[key][0] += s["tp"]
            tot[key][1] += s["fp"]
            tot[key][2] += s["fn"]
        rows[city] = {"ours": ours, "baseline": base, "seconds": dt}
        print(
            f"{city:12s} {ours['precision']:6.3f} {ours['recall']:6.3f} {ours['f1']:6.3f} "
            f"{ours['iou']:6.3f} | {base['f1']:7.3f} {100 * pred.mean():8.2f} {dt:5.1f}"
        )
    pooled = _metrics(*tot["ours"])
    pooled_base = _metrics(*tot["base"])
    print(
        f"{'POOLED':12s} {pooled['precision']:6.3f} {pooled['recall']:6.3f} {pooled['f1']:6.3f} "
        f"{pooled['iou']:6.3f} | {pooled_base['f1']:7.3f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cities": rows,
                    "pooled": pooled,
                    "pooled_baseline": pooled_base,
                    "params": params.model_dump(),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
