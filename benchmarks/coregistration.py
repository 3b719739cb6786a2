"""Co-registration benchmark: Vigía vs GFZ AROSICS (or plain global phase correlation), same pairs.

    python benchmarks/coregistration.py [--cases synthetic,realgrid,speed] [--arosics-big]
        [--json out.json]

Cases: `synthetic` = real OSCD B08 bands Fourier-shifted by 0.1..3 px with clouds/no-data;
`realgrid` = abudhabi/hongkong after-dates reprojected onto the before B08 grid; `speed` = a
5490 x 5490 4-band synthetic pair. AROSICS runs in /work/arosics-venv (env VIGIA_AROSICS_PYTHON)
via subprocess; without it the comparison is against one global phase-correlation window.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _coreg_data import (
    CITIES,
    add_clouds,
    after_on_before_grid,
    fourier_shift,
    read_band,
    synthetic_scene,
)

from imagery.config import CoregParams
from imagery.coregister import ShiftModel, apply_shift, estimate_shift

AROSICS_PY = Path(os.environ.get("VIGIA_AROSICS_PYTHON", "/work/arosics-venv/bin/python"))
RUNNER = Path(__file__).resolve().parent / "_coreg_arosics.py"
SMALL = CoregParams(window_px=128, grid_step_px=64)  # OSCD crops are only 340-800 px wide
GLOBAL_ONLY = CoregParams(min_tie_points=10**6)  # forces the single-window global estimate


def write_tif(path: Path, img: np.ndarray) -> None:
    """Float32 GeoTIFF on a made-up 10 m UTM grid, NaN written as -9999 (AROSICS's nodata)."""
    h, w = img.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=1,
        dtype="float32",
        crs="EPSG:32718",
        transform=from_origin(300000, 8660000, 10, 10),
        nodata=-9999,
        tiled=True,
        compress="zstd",
    ) as dst:
        dst.write(np.where(np.isfinite(img), img, -9999).astype(np.float32), 1)


def arosics(ref: np.ndarray, tgt: np.ndarray, mode: str, params: CoregParams) -> dict[str, Any] | None:
    """AROSICS shift in Vigía's sign (dx, dy) and its own timing; None when not installed."""
    if not AROSICS_PY.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        rp, tp = Path(tmp) / "ref.tif", Path(tmp) / "tgt.tif"
        write_tif(rp, ref)
        write_tif(tp, tgt)
        args = [
            str(AROSICS_PY),
            str(RUNNER),
            str(rp),
            str(tp),
            mode,
            str(params.window_px),
            str(params.grid_step_px),
            str(params.max_shift_px),
            "2",
        ]
        t0 = time.perf_counter()
        run = subprocess.run(args, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
    if run.returncode != 0:
        return {"error": run.stderr.strip().splitlines()[-1] if run.stderr else "failed"}
    out = json.loads(run.stdout.strip().splitlines()[-1])
    # AROSICS reports the correction to apply: the opposite sign of Vigía's target offset
    # (checked on a Fourier-shifted pair: Vigía dx=+2.3, dy=-1.1 -> x_shift_px=-2.3,
    # y_shift_px=+1.1).
    return {
        "dx": -out["x_shift_px"],
        "dy": -out["y_shift_px"],
        "seconds": out["seconds"],
        "wall_with_startup": wall,
        "n_points": out["n_points"],
    }


def vigia(ref: np.ndarray, tgt: np.ndarray, params: CoregParams) -> tuple[ShiftModel, float]:
    """Vigía's estimate and its wall time."""
    t0 = time.perf_counter()
    model = estimate_shift(ref, tgt, params)
    return model, time.perf_counter() - t0


def case_synthetic(per_city: int, use_arosics: bool) -> dict[str, Any]:
    """Known Fourier shifts of real OSCD B08 bands with clouds and a no-data corner."""
    rng = np.random.default_rng(2024)
    rows = []
    for city in CITIES:
        ref = read_band(city, "before", "B08")
        for _ in range(per_city):
            dx, dy = rng.uniform(0.1, 3.0, 2) * rng.choice([-1.0, 1.0], 2)
            tgt = add_clouds(fourier_shift(ref, dx, dy), rng)
            model, sec = vigia(ref, tgt, SMALL)
            glob_m, _ = vigia(ref, tgt, GLOBAL_ONLY)
            row = {
                "city": city,
                "dx": dx,
                "dy": dy,
                "vigia_err": _err(model.dx_px, model.dy_px, dx, dy),
                "vigia_s": sec,
                "method": model.method,
                "n": model.n_tie_points,
                "global_err": _err(glob_m.dx_px, glob_m.dy_px, dx, dy),
            }
            ar = arosics(ref, tgt, "local", SMALL) if use_arosics else None
            if ar and "dx" in ar:
                row.update(arosics_err=_err(ar["dx"], ar["dy"], dx, dy), arosics_s=ar["seconds"])
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    return {"rows": rows, "summary": _summary(rows, ["vigia", "global", "arosics"])}


def _err(gx: float, gy: float, dx: float, dy: float) -> float:
    """Largest per-axis absolute error, px."""
    return max(abs(gx - dx), abs(gy - dy))


def _summary(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Median/worst error and median time per method."""
    out: dict[str, Any] = {}
    for name in names:
        errs = [r[f"{name}_err"] for r in rows if f"{name}_err" in r]
        secs = [r[f"{name}_s"] for r in rows if f"{name}_s" in r]
        if errs:
            out[name] = {
                "median_err_px": statistics.median(errs),
                "max_err_px": max(errs),
                "median_s": statistics.median(secs) if secs else None,
                "n": len(errs),
            }
    return out


def case_realgrid(use_arosics: bool) -> dict[str, Any]:
    """After-date on another grid, reprojected onto the before B08 grid: shifts and residuals."""
    out = {}
    for city in ("abudhabi", "hongkong"):
        ref8, tgt8 = read_band(city, "before", "B08"), after_on_before_grid(city, "B08")
        ref4, tgt4 = read_band(city, "before", "B04"), after_on_before_grid(city, "B04")
        model, sec = vigia(ref8, tgt8, SMALL)
        raw4, _ = vigia(ref4, tgt4, GLOBAL_ONLY)
        res4, _ = vigia(ref4, apply_shift(tgt4, model), GLOBAL_ONLY)
        res8, _ = vigia(ref8, apply_shift(tgt8, model), GLOBAL_ONLY)
        row: dict[str, Any] = {
            "model": json.loads(model.model_dump_json()),
            "vigia_s": sec,
            "b04_global_before_correction": (raw4.dx_px, raw4.dy_px),
            "b04_global_residual_after_correction": (res4.dx_px, res4.dy_px),
            "b08_global_residual_after_correction": (res8.dx_px, res8.dy_px),
        }
        ar = arosics(ref8, tgt8, "local", SMALL) if use_arosics else None
        if ar and "dx" in ar:
            row["arosics"] = ar
            corr = apply_shift(tgt4, ShiftModel(dx_px=ar["dx"], dy_px=ar["dy"], method="global"))
            res_a, _ = vigia(ref4, corr, GLOBAL_ONLY)
            row["b04_global_residual_after_arosics_shift"] = (res_a.dx_px, res_a.dy_px)
        out[city] = row
        print(city, json.dumps(row, default=float))
    return out


def case_speed(use_arosics: bool, repeats: int = 3) -> dict[str, Any]:
    """5490 x 5490 x 4 synthetic pair, known shift: estimate (NIR band) + apply (4 bands)."""
    dx, dy = 1.37, -0.62
    ref, tgt = synthetic_scene(5490, 4, dx, dy, seed=7)
    params = CoregParams()
    apply_shift(tgt[:, :64, :64], ShiftModel())  # compile numba kernels outside the timing
    estimate_shift(ref[3, :600, :600], tgt[3, :600, :600], params)
    runs = []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        model = estimate_shift(ref[3], tgt[3], params)
        w1 = time.perf_counter()
        out = apply_shift(tgt, model)
        w2, c2 = time.perf_counter(), time.process_time()
        runs.append({"estimate_s": w1 - w0, "apply_s": w2 - w1, "total_s": w2 - w0, "cpu_s": c2 - c0})
    del out
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    rows, cols = np.mgrid[0:5490:61, 0:5490:61]
    mdx, mdy = model.shift_at(rows, cols)
    res = {
        "runs": runs,
        "median": med,
        "load_avg_1min": os.getloadavg()[0],
        "model": json.loads(model.model_dump_json()),
        "model_median_abs_err_px": float(np.median(np.hypot(mdx - dx, mdy - dy))),
    }
    if use_arosics:
        res["arosics"] = arosics(ref[3], tgt[3], "local", params)
        if res["arosics"] and "dx" in res["arosics"]:
            res["arosics"]["err_px"] = _err(res["arosics"]["dx"], res["arosics"]["dy"], dx, dy)
    print(json.dumps(res, default=float, indent=1))
    return res


def main() -> None:
    """Run the chosen cases and print a side-by-side summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="synthetic,realgrid,speed")
    ap.add_argument("--per-city", type=int, default=4)
    ap.add_argument("--no-arosics", action="store_true")
    ap.add_argument("--arosics-big", action="store_true", help="also AROSICS on the 5490 pair (~150 s)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    use = not args.no_arosics and AROSICS_PY.exists()
    if not use:
        print(f"AROSICS not used ({AROSICS_PY} missing or --no-arosics): comparing with global PC")
    cases = args.cases.split(",")
    results: dict[str, Any] = {"arosics": use, "cpus": os.cpu_count()}
    if "synthetic" in cases:
        results["synthetic"] = case_synthetic(args.per_city, use)
        print("SUMMARY synthetic", json.dumps(results["synthetic"]["summary"], indent=1))
        s = results["synthetic"]["summary"]
        if "arosics" in s:
            ratio = s["arosics"]["median_s"] / s["vigia"]["median_s"]
            print(f"time ratio AROSICS/Vigia: {ratio:.1f}x")
    if "realgrid" in cases:
        results["realgrid"] = case_realgrid(use)
    if "speed" in cases:
        results["speed"] = case_speed(use and args.arosics_big)
    if args.json:
        args.json.write_text(json.dumps(results, default=float, indent=1))


if __name__ == "__main__":
    main()
