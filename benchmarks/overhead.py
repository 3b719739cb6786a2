"""What a run spends around its pixels: the tile cache keys, Python's garbage collector per stage,
the Dask event loop's CPU in the tile pass and the wait from the end of the fit to the first tile.

    .venv/bin/python benchmarks/overhead.py --data-dir /work/scenes --work /tmp/vigia-overhead

Plans as performance.py does, fits the pair (the in-process cluster started meanwhile, as
`execute.detect` does), runs every tile into WORK/tiles (removed at the end) and prints: the CPU of
`tilecache.tile_keys`; every collection of the garbage collector (`gc.callbacks`, the collecting
thread's CPU) by stage; each thread's CPU in the tile pass (psutil, sampled every 50 ms; the
event loop is the thread Dask names 'IO loop'); the seconds from the fit's end to the first tile.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import performance as harness
import psutil

from imagery import execute
from imagery.config import load_settings
from imagery.pipeline import fit_pair
from imagery.sources.local import LocalSource
from imagery.tilecache import tile_keys


class GcClock:
    """Count and CPU seconds (the collecting thread's) of the collector's runs, per stage and generation."""

    def __init__(self) -> None:
        self.stage = "imports"
        self.runs: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0, 0.0])
        self._started = threading.local()

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started.cpu = time.thread_time()
            return
        run = self.runs[(self.stage, info["generation"])]
        run[0] += 1
        run[1] += time.thread_time() - self._started.cpu


class ThreadCpu:
    """Each thread's CPU seconds from `start` to `stop`, by thread name (psutil, sampled: threads
    that end between samples keep their last sample)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.names: dict[int, str] = {}
        self.last: dict[int, float] = {}
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="thread-cpu-sampler", daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            self.names |= {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
            self.last |= {t.id: t.user_time + t.system_time for t in self.process.threads()}

    def start(self) -> None:
        """Take the threads' CPU now as the zero."""
        self.base = {t.id: t.user_time + t.system_time for t in self.process.threads()}
        self._sampler.start()

    def stop(self) -> dict[str, float]:
        """CPU seconds per thread name since `start`, largest first."""
        self._done.set()
        self._sampler.join()
        by_name: dict[str, float] = defaultdict(float)
        for tid, cpu in self.last.items():
            by_name[self.names.get(tid, f"thread {tid}")] += cpu - self.base.get(tid, 0.0)
        return dict(sorted(by_name.items(), key=lambda kv: -kv[1]))


def main() -> None:
    """Plan, fit with the cluster starting, key and run the tiles, print what each overhead cost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parent / ".scenes")
    parser.add_argument("--size", default="6200x10400", help="scene set folder (COLSxROWS)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tile-size", type=int, default=1024)
    parser.add_argument("--work", type=Path, default=Path("/tmp/vigia-overhead"))
    args = parser.parse_args()
    clock = GcClock()
    gc.callbacks.append(clock)
    scenes = args.data_dir / args.size / "scenes"
    clock.stage = "plan"
    plan = harness.plan_for(scenes, load_settings(workers=args.workers, tile_size_px=args.tile_size))
    source = LocalSource(scenes)
    first_tile: list[float] = []
    run_tile = execute.run_tile

    def timed_tile(*a: Any, **k: Any) -> Any:  # called by the task (which Dask pickles), not pickled
        first_tile.append(time.perf_counter())
        return run_tile(*a, **k)

    execute.run_tile = timed_tile
    threads = ThreadCpu()
    with contextlib.ExitStack() as stack:
        clock.stage = "fit"
        starting = stack.enter_context(execute.local_cluster_started(args.workers))
        model = fit_pair(plan, source)
        fit_end = time.perf_counter()
        clock.stage = "tiles"
        cpu = time.process_time()
        tile_keys(plan, model)
        keys_cpu = time.process_time() - cpu
        threads.start()
        shutil.rmtree(args.work / "tiles", ignore_errors=True)
        execute.run_tiles(
            plan, model, source, args.work / "tiles", workers=args.workers, cluster=starting.result()
        )
        thread_cpu = threads.stop()
    shutil.rmtree(args.work / "tiles", ignore_errors=True)
    gc.callbacks.remove(clock)
    print(f"tile keys ({len(plan.tiles())} tiles): {keys_cpu:.3f} CPU s")
    print(f"fit end -> first tile: {min(first_tile) - fit_end:.3f} s")
    for (stage, generation), (n, seconds) in sorted(clock.runs.items()):
        print(f"gc {stage:7s} generation {generation}: {n:4.0f} runs, {seconds:.3f} CPU s")
    total = sum(s for (stage, _), (_, s) in clock.runs.items() if stage != "imports")
    print(f"gc after the imports: {total:.3f} CPU s")
    print(
        "tile pass CPU by thread: " + ", ".join(f"{k} {v:.2f} s" for k, v in thread_cpu.items() if v >= 0.01)
    )
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {psutil.cpu_count()} cores")


if __name__ == "__main__":
    main()
