"""Publish alone (`publish.publish`) on the tile results of a benchmarks/performance.py scene set:
wall seconds per stage, wall and CPU seconds in all, peak resident memory, optionally a profile.

    .venv/bin/python benchmarks/publish.py --data-dir /work/scenes --work /tmp/publish-bench
    .venv/bin/python benchmarks/publish.py --data-dir /work/scenes --work /tmp/publish-bench --profile p.prof

The first call fits the pair and runs the tiles (minutes at Lima size): the model is kept as
WORK/model.json and the tiles in WORK/tile-cache, keyed on their inputs (`execute.run_tiles`), so
later calls only publish, into WORK/layers (replaced each time; compare two code versions' layers
by copying it away). Tiles of other code versions are deleted from the cache (the code is part of a
tile's key). Delete WORK to fit again. `--profile FILE` writes a cProfile of the calling
thread for `python -m pstats FILE`, with that thread's CPU time as its clock (process CPU time
would charge the COG thread's work to whatever the calling thread runs meanwhile).
"""

from __future__ import annotations

import argparse
import cProfile
import shutil
import time
from pathlib import Path

import performance as harness
import psutil

from imagery.config import load_settings
from imagery.execute import run_tiles
from imagery.pipeline import PairModel, fit_pair
from imagery.publish import publish
from imagery.runs import prune_tile_cache
from imagery.sources.local import LocalSource
from imagery.stageclock import StageClock


def main() -> None:
    """Plan the run as performance.py does, fit and run the tiles once, then time publish."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parent / ".scenes")
    parser.add_argument("--size", default="6200x10400", help="scene set folder (COLSxROWS)")
    parser.add_argument("--workers", type=int, default=2, help="tile threads, as in a run")
    parser.add_argument("--work", type=Path, required=True, help="folder for the model, tiles and layers")
    parser.add_argument("--profile", type=Path, help="write a cProfile of publish here")
    args = parser.parse_args()
    scenes = args.data_dir / args.size / "scenes"
    plan = harness.plan_for(scenes, load_settings(workers=args.workers))
    source = LocalSource(scenes)
    args.work.mkdir(parents=True, exist_ok=True)
    model_file = args.work / "model.json"
    if model_file.exists():
        model = PairModel.model_validate_json(model_file.read_text())
    else:
        model = fit_pair(plan, source)
        model_file.write_text(model.model_dump_json())
    tile_dir = args.work / "tiles"
    cache = args.work / "tile-cache"
    done = run_tiles(plan, model, source, tile_dir, cache_dir=cache, workers=args.workers)
    prune_tile_cache(cache, {d.path for d in done}, older_than_s=0)  # other code versions' tiles
    out = args.work / "layers"
    shutil.rmtree(out, ignore_errors=True)

    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    clock = StageClock()
    from_rss = harness._restart_peak_rss()
    wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
    if profiler:
        profiler.enable()
    publish(plan, model, tile_dir, out, clock=clock)
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    thread = time.thread_time() - thread
    peak = harness._max_rss()
    stages = ", ".join(f"{name} {sec:.2f} s" for name, sec in clock.seconds.items())
    print(
        f"grid {plan.grid.height} x {plan.grid.width} px, {len(done)} tiles "
        f"({sum(d.reused for d in done)} reused)"
    )
    print(f"publish: {wall:.2f} s wall, {cpu:.2f} s CPU (process), {thread:.2f} s CPU (calling thread)")
    print(f"stages (wall; the COG encodes count as mosaic write and run beside hotspots): {stages}")
    print(f"RSS: {from_rss / 2**30:.2f} GiB before publish, peak {peak / 2**30:.2f} GiB")
    print(f"load average (1 min) at the end: {psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} cores")


if __name__ == "__main__":
    main()
