"""The tile pass alone (`pipeline.run_tile` on threads, as the Dask worker runs it) on the first
tiles of a benchmarks/performance.py scene set: CPU seconds, blocks decoded, resident memory.

    .venv/bin/python benchmarks/tiles.py --data-dir /work/scenes --tiles 28 --threads 2
    .venv/bin/python benchmarks/tiles.py --data-dir /work/scenes --tiles 8 --threads 1 --profile t.prof

The pair is fitted once and kept as WORK/model.json (`--work`, default /tmp/vigia-tiles-bench), so
later calls time the tiles only; `--fit` fits again first (and reports the fit's resident memory).
Tiles are taken row by row from the top left, as a run submits them; `--profile FILE` writes a
cProfile (process CPU clock) of the tiles for `python -m pstats FILE` (with `--threads 1`: the
profiler sees only the calling thread, where one thread's tiles run).
"""

from __future__ import annotations

import argparse
import cProfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import performance as harness
import psutil

from imagery.config import load_settings
from imagery.execute import tile_to_file
from imagery.pipeline import PairModel, fit_pair
from imagery.sources import raster
from imagery.sources.local import LocalSource
from imagery.tilestore import tile_path


def main() -> None:
    """Plan as performance.py does, fit (or load the fit), run the first tiles, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parent / ".scenes")
    parser.add_argument("--size", default="6200x10400", help="scene set folder (COLSxROWS)")
    parser.add_argument("--tiles", type=int, default=28, help="how many tiles, from the top left")
    parser.add_argument("--threads", type=int, default=2, help="tiles at once, as Dask worker threads")
    parser.add_argument("--work", type=Path, default=Path("/tmp/vigia-tiles-bench"))
    parser.add_argument("--fit", action="store_true", help="fit the pair again first")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the tiles here")
    args = parser.parse_args()
    scenes = args.data_dir / args.size / "scenes"
    plan = harness.plan_for(scenes, load_settings(workers=args.threads))
    source = LocalSource(scenes)
    proc = psutil.Process()
    args.work.mkdir(parents=True, exist_ok=True)
    saved = args.work / "model.json"
    if args.fit or not saved.exists():
        model = fit_pair(plan, source)
        saved.write_text(model.model_dump_json())
        print(f"fit: RSS {proc.memory_info().rss / 2**30:.2f} GiB after the fit")
    model = PairModel.model_validate_json(saved.read_text())

    peak = [proc.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], proc.memory_info().rss)

    threading.Thread(target=sample, daemon=True).start()
    chosen = plan.tiles()[: args.tiles]
    out = args.work / "tiles"
    decoded = raster.DECODED_BLOCKS.decoded
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    with ThreadPoolExecutor(args.threads) as pool:
        run = map if args.threads == 1 else pool.map  # one thread: in this one, which cProfile sees
        list(run(lambda t: tile_to_file(plan, model, source, t.name, tile_path(out, t.name)), chosen))
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done.set()
    for path in out.glob("*.tile"):
        path.unlink()
    pixels = sum(t.height * t.width for t in chosen)
    print(f"{len(chosen)} tiles ({pixels / 1e6:.1f} Mpx), {args.threads} threads: {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU ({cpu / len(chosen):.2f} s per tile)")  # fmt: skip
    rss = proc.memory_info().rss
    print(f"blocks decoded: {raster.DECODED_BLOCKS.decoded - decoded}; "
          f"RSS peak {peak[0] / 2**30:.2f} GiB, at the end {rss / 2**30:.2f} GiB")  # fmt: skip
    print(f"load average (1 min) at the end: {psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} cores")


if __name__ == "__main__":
    main()
