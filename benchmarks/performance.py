"""Performance harness (issue #7): the Vigía pipeline against the speed of decoding its inputs and
against what a user would write by hand, on a Lima-sized Sentinel-2-style scene set.

    .venv/bin/python benchmarks/performance.py --scale 1 --workers 2     # Lima-sized, ~6200 x 10400 px
    .venv/bin/python benchmarks/performance.py --tiny                    # seconds; the CI smoke test

The scene set (per-band deflate COGs: B02 B03 B04 B08 at 10 m, B11 B12 SCL at 20 m, 3 looks per
period, 2 periods) is generated once per size and cached under --data-dir (git-ignored). Each
measurement runs in its own process; the parent samples the resident memory of that process and
all its children (psutil, every 50 ms) for the peak. Results are printed as a table and, with
--record, written into docs/performance.md under the run's date and machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "benchmarks" / ".scenes"
DEFAULT_DOCS = ROOT / "docs" / "performance.md"
#: The Lima+Callao bounding box on the EPSG:32718 10 m grid (rows, cols) at scale 1: 104 x 62 km.
LIMA_SHAPE = (10_400, 6_200)
TINY_SHAPE = (640, 512)
#: Upper-left corner of the benchmark grid (UTM 18S): the north-west of the Lima+Callao box.
ORIGIN = (262_000.0, 8_724_000.0)
#: Side of the synthetic motif (demo land cover) that is mirrored to fill the scene.
MOTIF_PX = 2048
SEED = 7
#: (date, clouds in the motif) of the looks: three before (baseline 02.14), three after (04.00).
BEFORE_LOOKS = (("20210128", 4), ("20210202", 2), ("20210212", 3))
AFTER_LOOKS = (("20220202", 3), ("20220207", 4), ("20220217", 2))
STAGE_ROWS = (
    "read+mask+composite",
    "co-registration",
    "normalisation+change",
    "mosaic write",
    "hotspots",
    "metadata+report",
)
PEER_ROWS = ("load+mask+composite", "phase correlation+shift", "cva+otsu", "raster write", "polygons")


# ---------------------------------------------------------------------------------------------
# Scene set


def scene_shape(scale: float, tiny: bool) -> tuple[int, int]:
    """Grid shape (rows, cols) for an area `scale` times the Lima box; even, so 20 m bands align."""
    if tiny:
        return TINY_SHAPE
    side = math.sqrt(scale)
    return tuple(2 * round(n * side / 2) for n in LIMA_SHAPE)  # type: ignore[return-value]


def _mirror_index(n: int, period: int) -> np.ndarray:
    """Indices 0..n-1 folded into 0..period-1 by mirroring (continuous at every fold)."""
    i = np.arange(n) % (2 * period)
    return np.where(i < period, i, 2 * period - 1 - i)


def generate_scenes(folder: Path, shape: tuple[int, int]) -> Path:
    """Write the scene set for `shape` under `folder` (skipped when complete): demo land cover and
    looks on a motif, mirrored to fill the grid, written as Sentinel-2 L2A-style per-band COGs.

    The looks are drawn on the motif here (one random sequence, so the content depends only on the
    shape); the files are filled strip by strip from the mirrored motif in worker processes, one
    file each, so memory stays bounded by the motif and a strip whatever the area."""
    from affine import Affine

    from imagery import demo

    marker = folder / "scenes.json"
    if marker.exists():
        return folder / "scenes"
    motif = min(MOTIF_PX, max(256, 2 * (max(shape) // 4)))
    rng = np.random.default_rng(SEED)
    cover, masks = demo._land_cover(rng, motif)
    cover_after, _ = demo._plant_changes(rng, cover, masks)
    texture = demo._fractal(cover.shape, rng, 1.2)
    roofs = demo._fractal(cover.shape, rng, 0.3)
    shape20 = (shape[0] // 2, shape[1] // 2)
    transform = Affine(demo.RESOLUTION, 0, ORIGIN[0], 0, -demo.RESOLUTION, ORIGIN[1])
    looks = [(d, c, False) for d, c in BEFORE_LOOKS] + [(d, c, True) for d, c in AFTER_LOOKS]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1, mp_context=context) as pool:
        written = []
        for when, clouds, after in looks:
            look = demo.Look(when, "S2A", "04.00" if after else "02.14", clouds, after=after)
            refl = demo._reflectance(cover_after if after else cover, texture, roofs)
            if after:
                refl *= np.asarray([1.04, 1.03, 1.02, 0.97, 0.98, 0.99], np.float32)[:, None, None]
                refl += np.float32(0.004)
            refl += rng.normal(0, 0.003, refl.shape).astype(np.float32)
            if after:
                refl = np.stack([demo._fourier_shift(b, *demo.AFTER_SHIFT_PX) for b in refl])
            cloud, shadow = demo._clouds(rng, clouds, motif)
            refl[:, shadow] *= 0.35
            refl[:, cloud] = 0.45 + 0.1 * np.asarray([1.0, 1.0, 1.0, 1.1, 0.8, 0.6], np.float32)[:, None]
            scl = demo._scl_20m(demo._scl(cover, cloud, shadow))
            offset = -1000.0 if after else 0.0
            name = f"S2A_MSIL2A_{when}T152639_N{look.baseline.replace('.', '')}_R025_T18LTM_{when}T190000"
            tags = {
                "PROCESSING_LEVEL": "Level-2A", "PROCESSING_BASELINE": look.baseline,
                "BOA_ADD_OFFSET": str(offset), "ACQUISITION_DATE": f"{when[:4]}-{when[4:6]}-{when[6:]}",
                "SPACECRAFT_NAME": "Sentinel-2A", "BENCHMARK": "synthetic, see benchmarks/performance.py",
            }  # fmt: skip
            prefix = folder / "scenes" / name / f"T18LTM_{when}T152639"
            for i, band in enumerate((*demo.BANDS_10M, *demo.BANDS_20M)):
                if band in demo.BANDS_10M:
                    job = (Path(f"{prefix}_{band}.tif"), demo._to_dn(refl[i], offset), shape, transform)
                else:
                    dn = demo._to_dn(demo._downsample(refl[i]), offset)
                    job = (Path(f"{prefix}_{band}_20m.tif"), dn, shape20, transform * Affine.scale(2))
                written.append(pool.submit(write_mirrored_cog, *job, tags))
            job = (Path(f"{prefix}_SCL_20m.tif"), scl, shape20, transform * Affine.scale(2))
            written.append(pool.submit(write_mirrored_cog, *job, tags))
            del refl
        for done in written:
            done.result()
    marker.write_text(json.dumps({"shape": shape, "motif_px": motif, "seed": SEED}) + "\n")
    return folder / "scenes"


#: Rows of the grid filled at a time while writing a scene file (whole COG blocks).
STRIP_ROWS = 512
#: GDAL block cache while writing a scene file (bytes): bounded, whatever the file size.
WRITE_CACHE_BYTES = 128 * 2**20


def write_mirrored_cog(
    path: Path, motif: np.ndarray, shape: tuple[int, int], transform: Any, tags: dict[str, str]
) -> None:
    """Write `motif` mirrored to fill `shape` (rows, cols) as a deflate COG at `path`, the way the
    demo writes its scenes (`imagery.demo._write_cog`): filled strip by strip into an uncompressed
    scratch GeoTIFF beside it, then copied by GDAL's COG driver (overviews, deflate on all cores)."""
    import rasterio
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window

    from imagery import demo
    from imagery.export import atomic_path

    rows, cols = _mirror_index(shape[0], motif.shape[0]), _mirror_index(shape[1], motif.shape[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.scratch.tif")
    profile = {
        "driver": "GTiff", "width": shape[1], "height": shape[0], "count": 1, "dtype": motif.dtype.name,
        "crs": demo.CRS, "transform": transform, "nodata": 0, "tiled": True, "blockxsize": STRIP_ROWS,
        "blockysize": STRIP_ROWS, "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    try:
        with rasterio.Env(GDAL_CACHEMAX=WRITE_CACHE_BYTES):
            with rasterio.open(scratch, "w", **profile) as ds:
                ds.update_tags(**tags)
                for row in range(0, shape[0], STRIP_ROWS):
                    strip = rows[row : row + STRIP_ROWS]
                    ds.write(motif[np.ix_(strip, cols)], 1, window=Window(0, row, shape[1], len(strip)))
            with atomic_path(path) as tmp:
                rio_copy(scratch, tmp, driver="COG", COMPRESS="DEFLATE", PREDICTOR=2, BLOCKSIZE=512,
                         NUM_THREADS="ALL_CPUS")  # fmt: skip
    finally:
        scratch.unlink(missing_ok=True)


def scene_files(scenes: Path) -> list[Path]:
    """Every band file of the scene set."""
    return sorted(scenes.rglob("*.tif"))


# ---------------------------------------------------------------------------------------------
# Measurements (each runs in its own process: `--phase NAME`)


def phase_decode(scenes: Path, _: argparse.Namespace) -> dict[str, Any]:
    """Read every pixel of every input file, block row by block row, GDAL threads on all cores."""
    import rasterio

    from imagery.sources.raster import GDAL_READ_ENV

    pixels = nbytes = 0
    start = time.perf_counter()
    with rasterio.Env(**GDAL_READ_ENV):
        for path in scene_files(scenes):
            with rasterio.open(path) as src:
                step = src.block_shapes[0][0] * 2
                for row in range(0, src.height, step):
                    window = rasterio.windows.Window(0, row, src.width, min(step, src.height - row))
                    data = src.read(1, window=window)
                    pixels += data.size
                    nbytes += data.nbytes
    return {"seconds": time.perf_counter() - start, "input_pixels": pixels, "input_bytes": nbytes}


def phase_pipeline(scenes: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The full Vigía run from the scene files to the published layers, seconds per stage."""
    from imagery.config import load_settings
    from imagery.execute import local_cluster_started, run_tiles
    from imagery.heap import keep_freed_arrays
    from imagery.look_store import LookStore
    from imagery.pipeline import fit_pair
    from imagery.publish import publish
    from imagery.sources.local import LocalSource
    from imagery.stageclock import StageClock
    from imagery.tilestore import load_tile, tile_path

    work = Path(args.work_dir)
    start = time.perf_counter()
    settings = load_settings(workers=args.workers, tile_size_px=args.tile_size)
    source = LocalSource(scenes)
    plan = plan_for(scenes, settings)
    fit_clock = StageClock()
    looks = LookStore(work / "looks", plan)  # as `execute.detect`: tie-point decodes kept for the tiles
    keep_freed_arrays()  # as `execute.detect`: before the cluster's threads start
    at_start = {"fit": _restart_peak_rss()}
    with contextlib.ExitStack() as stack:  # as `execute.detect`: the in-process cluster starts during the fit
        starting = None if args.processes else stack.enter_context(local_cluster_started(args.workers))
        t0 = time.perf_counter()
        model = fit_pair(plan, source, fit_clock, looks)
        t1 = time.perf_counter()
        rss = {"fit": _max_rss()}
        at_start["tiles"] = _restart_peak_rss()
        tile_dir = work / "tiles"
        cluster = _process_cluster(args.workers) if args.processes else None
        try:
            run_tiles(
                plan, model, source, tile_dir, workers=args.workers,
                dask_address=cluster.scheduler_address if cluster else None,
                cluster=starting.result() if starting else None, looks=looks,
            )  # fmt: skip
        finally:
            if cluster is not None:
                cluster.close()
        t2 = time.perf_counter()
    rss["tiles"] = _max_rss()
    at_start["publish"] = _restart_peak_rss()
    publish_clock = StageClock()
    publish(plan, model, tile_dir, work / "run", clock=publish_clock)
    t3 = time.perf_counter()
    rss["publish"] = _max_rss()
    tile_clock = StageClock()
    for tile in plan.tiles():
        result = load_tile(tile_path(tile_dir, tile.name))
        tile_clock.add(result.seconds if result is not None else {})
    return {
        "seconds": t3 - start,
        "fit_seconds": t1 - t0,
        "tiles_seconds": t2 - t1,
        "publish_seconds": t3 - t2,
        "fit": fit_clock.seconds,
        "tiles": tile_clock.seconds,
        "publish": publish_clock.seconds,
        "tile_count": len(plan.tiles()),
        "max_rss_by_stage" if at_start["fit"] else "max_rss_by_end_of": rss,
        "rss_at_stage_start": at_start,
        "max_rss_bytes": max(rss.values()),
        "grid": [plan.grid.height, plan.grid.width],
    }


def _max_rss() -> int:
    """Peak resident memory of this process so far, bytes (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _restart_peak_rss() -> int:
    """Start this process's peak resident memory afresh (Linux: /proc/self/clear_refs), so that
    `_max_rss` gives the peak of the stage that follows; returns the resident memory at that
    moment (bytes), or 0 where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return 0
    return _max_rss()


def _scenes_of(scenes: Path) -> list[Any]:
    """Every scene of the set, oldest first."""
    from imagery.sources.local import open_scene

    return sorted((open_scene(p) for p in sorted(scenes.iterdir()) if p.is_dir()), key=lambda s: s.acquired)


def plan_for(scenes: Path, settings: Any) -> Any:
    """The benchmarked run on a scene set: the 2021 looks before, the 2022 looks after, on the
    scenes' own grid (also used by fit_pair.py, tiles.py and publish.py)."""
    from imagery.pipeline import plan_run

    found = _scenes_of(scenes)
    before = [s for s in found if s.acquired.year == 2021]
    return plan_run(None, before, [s for s in found if s.acquired.year == 2022], settings)


def _process_cluster(workers: int) -> Any:
    """A local Dask cluster of `workers` worker processes (one thread each) on loopback."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )


def phase_peer(scenes: Path, args: argparse.Namespace) -> dict[str, Any]:
    """What a user would write: whole bands with rioxarray, numpy median composite and change
    vector, one global phase correlation, Otsu, rasterio.features.shapes."""
    import geopandas as gpd
    import rasterio.features
    import rioxarray
    from rasterio.enums import Resampling
    from scipy import ndimage
    from shapely.geometry import shape
    from skimage.filters import threshold_otsu
    from skimage.registration import phase_cross_correlation

    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels (cloud in every look) stay NaN
    out = Path(args.work_dir) / "peer"
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    folders = sorted(p for p in scenes.iterdir() if p.is_dir())
    periods = {
        "before": [f for f in folders if "_2021" in f.name],
        "after": [f for f in folders if "_2022" in f.name],
    }
    ref = rioxarray.open_rasterio(next(folders[0].glob("*_B02.tif"))).squeeze(drop=True)
    composites: dict[str, np.ndarray] = {}
    t = time.perf_counter()
    for period, looks in periods.items():
        offset = -1000.0 if period == "after" else 0.0
        masks = []
        for look in looks:
            scl = rioxarray.open_rasterio(next(look.glob("*_SCL_20m.tif"))).squeeze(drop=True)
            scl = scl.rio.reproject_match(ref, resampling=Resampling.nearest).values
            masks.append(np.isin(scl, (0, 1, 3, 8, 9, 10)))
        bands = []
        for band in ("B02", "B03", "B04", "B08", "B11", "B12"):
            stack = []
            for look, cloudy in zip(looks, masks, strict=True):
                da = rioxarray.open_rasterio(next(look.glob(f"*_{band}*.tif"))).squeeze(drop=True)
                if band in ("B11", "B12"):
                    da = da.rio.reproject_match(ref, resampling=Resampling.bilinear)
                refl = (da.values.astype(np.float32) + offset) / 10000.0
                refl[(da.values == 0) | cloudy] = np.nan
                stack.append(refl)
            bands.append(np.nanmedian(np.stack(stack), axis=0).astype(np.float32))
            del stack
        composites[period] = np.stack(bands)
    seconds["load+mask+composite"] = time.perf_counter() - t
    t = time.perf_counter()
    before, after = composites["before"], composites["after"]
    nir_b, nir_a = np.nan_to_num(before[3]), np.nan_to_num(after[3])
    shift, _, _ = phase_cross_correlation(nir_b, nir_a, upsample_factor=10)
    after = np.stack([ndimage.shift(b, shift, order=1, mode="nearest") for b in after])
    seconds["phase correlation+shift"] = time.perf_counter() - t
    t = time.perf_counter()
    magnitude = np.sqrt(np.nansum((after - before) ** 2, axis=0)).astype(np.float32)
    magnitude[~(np.isfinite(before).all(axis=0) & np.isfinite(after).all(axis=0))] = np.nan
    changed = (magnitude > threshold_otsu(magnitude[np.isfinite(magnitude)])).astype(np.uint8)
    seconds["cva+otsu"] = time.perf_counter() - t
    t = time.perf_counter()
    ref.copy(data=magnitude).rio.to_raster(out / "magnitude.tif", compress="deflate", tiled=True)
    ref.copy(data=changed).rio.to_raster(out / "changed.tif", compress="deflate", tiled=True)
    seconds["raster write"] = time.perf_counter() - t
    t = time.perf_counter()
    shapes = rasterio.features.shapes(changed, mask=changed.astype(bool), transform=ref.rio.transform())
    frame = gpd.GeoDataFrame(geometry=[shape(g) for g, _ in shapes], crs=ref.rio.crs)
    frame.to_file(out / "changed.geojson", driver="GeoJSON")
    seconds["polygons"] = time.perf_counter() - t
    return {"seconds": time.perf_counter() - start, "stages": seconds, "polygons": len(frame),
            "shift_px": [float(v) for v in shift]}  # fmt: skip


PHASES = {"decode": phase_decode, "pipeline": phase_pipeline, "peer": phase_peer}


# ---------------------------------------------------------------------------------------------
# Running the phases and measuring memory


@dataclass
class Measured:
    """One phase's result (from the child) and the peak resident memory of its process tree."""

    result: dict[str, Any]
    peak_rss_bytes: int


def run_phase(name: str, scenes: Path, args: argparse.Namespace, work: Path) -> Measured:
    """Run one phase in a child process; sample the RSS of the child (and of its children, the Dask
    worker processes, with --processes)."""
    import psutil

    result_file = work / f"{name}.json"
    cmd = [
        sys.executable, __file__, "--phase", name, "--scenes", str(scenes), "--result", str(result_file),
        "--work-dir", str(work / name), "--workers", str(args.workers), "--tile-size", str(args.tile_size),
    ]  # fmt: skip
    if args.processes:
        cmd.append("--processes")
    child = subprocess.Popen(cmd, cwd=ROOT)
    proc = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        try:
            # Children only with --processes (the Dask workers): a short-lived child such as the
            # `uname -p` Dask's worker runs shares the parent's pages until it execs and would count twice.
            tree = [proc, *(proc.children(recursive=True) if args.processes else [])]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    if child.returncode != 0:
        raise SystemExit(f"benchmark phase {name} failed (exit {child.returncode})")
    result = json.loads(result_file.read_text())
    return Measured(result, max(peak, int(result.get("max_rss_bytes", 0))))


def child_main(args: argparse.Namespace) -> None:
    """Entry of a `--phase` child: run it and write its result JSON."""
    result = PHASES[args.phase](Path(args.scenes), args)
    result["max_rss_bytes"] = max(result.get("max_rss_bytes", 0), _max_rss())
    cpu = os.times()  # all threads, and child processes (Dask workers) that have ended
    result["cpu_seconds"] = cpu.user + cpu.system + cpu.children_user + cpu.children_system
    Path(args.result).write_text(json.dumps(result, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# Report


def stage_seconds(pipeline: dict[str, Any]) -> dict[str, float]:
    """Wall seconds per stage: fit and publish stages as timed; the tile phase's wall time split
    between its stages in proportion to the seconds the tile tasks spent in each."""
    out = {name: 0.0 for name in STAGE_ROWS}
    for part in ("fit", "publish"):
        for name, sec in pipeline[part].items():
            out[name] = out.get(name, 0.0) + sec
    tile_total = sum(pipeline["tiles"].values())
    for name, sec in pipeline["tiles"].items():
        out[name] = out.get(name, 0.0) + pipeline["tiles_seconds"] * sec / tile_total
    return out


def report(
    shape: tuple[int, int], args: argparse.Namespace, measured: dict[str, Measured], files: list[Path]
) -> str:
    """The results table (markdown) with ratios, date, machine and command."""
    from imagery.pipeline import FIT_MAX_PIXELS, FIT_WINDOW_PX

    grid_mpx = shape[0] * shape[1] / 1e6
    decode, pipe = measured["decode"], measured["pipeline"]
    rows: list[tuple[str, float, float | None, int | None]] = []
    rows.append(
        ("decode-only (floor)", decode.result["seconds"], decode.result["cpu_seconds"], decode.peak_rss_bytes)
    )
    for name, sec in stage_seconds(pipe.result).items():
        rows.append((f"pipeline: {name}", sec, None, None))
    rows.append(("pipeline total", pipe.result["seconds"], pipe.result["cpu_seconds"], pipe.peak_rss_bytes))
    peer = measured.get("peer")
    if peer is not None:
        for name in PEER_ROWS:
            rows.append((f"peer: {name}", peer.result["stages"][name], None, None))
        rows.append(("peer total", peer.result["seconds"], peer.result["cpu_seconds"], peer.peak_rss_bytes))
    in_bytes = decode.result["input_bytes"]
    fit = ", ".join(f"{k} {v:.1f} s" for k, v in pipe.result["fit"].items())
    lines = [
        f"### {shape[1]} x {shape[0]} px ({grid_mpx:.1f} Mpx, scale {'tiny' if args.tiny else args.scale}), "
        f"{args.workers} Dask worker{'s' if args.workers > 1 else ''} "
        f"({'processes' if args.processes else 'threads'}), tile {args.tile_size} px",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; machine: {machine()}",
        f"- load average (1 min) at start / end of the measurements: {args.load[0]:.1f} / "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores{load_note(args.load[0], os.getloadavg()[0])}",
        f"- command: `.venv/bin/python benchmarks/performance.py {command_line(args)}`",
        f"- inputs: {len(files)} files, {in_bytes / 1e9:.2f} GB decoded "
        f"({sum(f.stat().st_size for f in files) / 1e9:.2f} GB on disk), {pipe.result['tile_count']} tiles",
        f"- pair fit (once per run, a {FIT_WINDOW_PX} px window, {FIT_MAX_PIXELS / 1e6:g} M sampled pixels; "
        f"included above): {fit}",
        "",
        "| step | seconds | Mpx/s (grid) | CPU seconds | peak RSS |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, sec, cpu, rss in rows:
        rate = grid_mpx / sec if sec > 0 else float("nan")
        cpu_text = f"{cpu:.1f}" if cpu is not None else ""
        rss_text = f"{rss / 2**30:.2f} GiB" if rss else ""
        lines.append(f"| {name} | {sec:.2f} | {rate:.1f} | {cpu_text} | {rss_text} |")
    ratio = pipe.result["seconds"] / decode.result["seconds"]
    cpu_ratio = pipe.result["cpu_seconds"] / decode.result["cpu_seconds"]
    lines += [
        "",
        f"- pipeline / decode-only: **{ratio:.2f}x** (target <= 3x); in CPU seconds {cpu_ratio:.2f}x",
    ]
    if peer is not None:
        lines.append(
            f"- peer / pipeline: **{peer.result['seconds'] / pipe.result['seconds']:.2f}x** (target >= 5x)"
        )
    else:
        lines.append("- peer: not run (see --peer)")
    per_stage = "max_rss_by_stage" in pipe.result
    stages = pipe.result["max_rss_by_stage" if per_stage else "max_rss_by_end_of"]
    at_start = pipe.result.get("rss_at_stage_start", {})
    by_stage = ", ".join(
        f"{k} {v / 2**30:.2f}" + (f" (from {at_start[k] / 2**30:.2f})" if at_start.get(k) else "")
        for k, v in stages.items()
    )
    lines.append(
        f"- peak RSS pipeline: **{pipe.peak_rss_bytes / 2**30:.2f} GiB** (target <= 1.5 GB); "
        f"main process peak {'during' if per_stage else 'by the end of'}: {by_stage} GiB"
    )
    lines.append(
        f"- decode-only: {in_bytes / 1e6 / decode.result['seconds']:.0f} MB/s of decoded input; "
        f"pipeline: fit {pipe.result['fit_seconds']:.1f} s, tiles {pipe.result['tiles_seconds']:.1f} s, "
        f"publish {pipe.result['publish_seconds']:.1f} s"
    )
    return "\n".join(lines) + "\n"


def machine() -> str:
    """CPU model, cores, memory and OS of this machine."""
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def load_note(*loads: float) -> str:
    """What the load averages say about the run: a note only when one is above the core count."""
    return " (above the core count: the machine was shared)" if max(loads) > (os.cpu_count() or 1) else ""


def command_line(args: argparse.Namespace) -> str:
    """The options that shaped this run, as typed."""
    parts = ["--tiny"] if args.tiny else [f"--scale {args.scale:g}"]
    parts.append(f"--workers {args.workers}")
    if args.tile_size != 1024:
        parts.append(f"--tile-size {args.tile_size}")
    if args.processes:
        parts.append("--processes")
    if args.record:
        parts.append("--record")
    return " ".join(parts)


BEGIN, END = (
    "<!-- results: begin (written by benchmarks/performance.py --record) -->",
    "<!-- results: end -->",
)


def record(text: str, docs: Path) -> None:
    """Add the run's section to the results block of `docs` (created when missing)."""
    current = docs.read_text() if docs.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in current:
        current += f"\n{BEGIN}\n{END}\n"
    head, rest = current.split(BEGIN, 1)
    body, tail = rest.split(END, 1)
    docs.write_text(
        f"{head}{BEGIN}\n{body.strip()}\n\n{text}\n{END}{tail}".replace(f"{BEGIN}\n\n\n", f"{BEGIN}\n\n")
    )


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--scale", type=float, default=1.0, help="area as a multiple of the Lima+Callao box")
    p.add_argument("--tiny", action="store_true", help="a 512 x 640 px scene set (CI smoke test)")
    p.add_argument("--workers", type=int, default=2, help="Dask workers (threads of the local worker)")
    p.add_argument("--processes", action="store_true", help="Dask worker processes instead of threads")
    p.add_argument("--tile-size", type=int, default=1024, help="processing tile edge, px")
    p.add_argument("--peer", choices=("auto", "yes", "no"), default="auto",
                   help="run the peer (auto: up to scale 1; it holds whole scenes in memory)")  # fmt: skip
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="scene cache (git-ignored)")
    p.add_argument("--record", action="store_true", help="write the table into --docs")
    p.add_argument("--docs", type=Path, default=DEFAULT_DOCS)
    p.add_argument("--json", type=Path, help="also write the raw measurements here")
    p.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    p.add_argument("--scenes", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--work-dir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Generate (once) the scene set, measure decode-only, the pipeline and the peer, report."""
    args = parse_args(argv)
    if args.phase:
        child_main(args)
        return
    shape = scene_shape(args.scale, args.tiny)
    folder = args.data_dir / f"{shape[1]}x{shape[0]}"
    t = time.perf_counter()
    scenes = generate_scenes(folder, shape)
    print(f"scene set {folder} ready ({time.perf_counter() - t:.0f} s)", flush=True)
    files = scene_files(scenes)
    for path in files:  # warm the page cache equally for every phase
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
    run_peer = args.peer == "yes" or (args.peer == "auto" and (args.tiny or args.scale <= 1.0))
    measured: dict[str, Measured] = {}
    args.load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vigia-perf-", dir=args.data_dir) as tmp:
        for name in ("decode", "pipeline", *(("peer",) if run_peer else ())):
            print(f"measuring {name} ...", flush=True)
            measured[name] = run_phase(name, scenes, args, Path(tmp))
            shutil.rmtree(Path(tmp) / name, ignore_errors=True)
    text = report(shape, args, measured, files)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({k: v.__dict__ for k, v in measured.items()}, indent=1) + "\n")
    if args.record:
        record(text, args.docs)
        print(f"recorded in {args.docs}")


if __name__ == "__main__":
    main()
