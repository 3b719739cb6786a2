"""The pair fit alone (`pipeline.fit_pair`) on a scene set of benchmarks/performance.py: wall and
CPU seconds per stage and the peak resident memory of this process (psutil, every 20 ms).

    .venv/bin/python benchmarks/fit_pair.py --data-dir /work/scenes --workers 2

`--data-dir` is performance.py's (it holds one folder per grid size, e.g. 6200x10400/scenes);
`--json FILE` also writes the fitted PairModel, to compare the models of two code versions.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import performance as harness
import psutil

from imagery.config import load_settings
from imagery.pipeline import fit_pair
from imagery.sources.local import LocalSource
from imagery.stageclock import StageClock


class CpuStageClock(StageClock):
    """A StageClock that also adds up this process's CPU seconds per stage (the fit's stages run
    one after another, so the process's CPU time in a stage is that stage's)."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu_seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block (wall and CPU) and add it to `name`."""
        cpu = time.process_time()
        try:
            with super().stage(name):
                yield
        finally:
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - cpu


def main() -> None:
    """Plan the run as performance.py does (2021 looks before, 2022 after), fit, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parent / ".scenes")
    parser.add_argument("--size", default="6200x10400", help="scene set folder (COLSxROWS)")
    parser.add_argument("--workers", type=int, default=2, help="tie-point threads, as in a run")
    parser.add_argument("--json", type=Path, help="write the fitted model here")
    args = parser.parse_args()
    scenes = args.data_dir / args.size / "scenes"
    plan = harness.plan_for(scenes, load_settings(workers=args.workers))
    proc = psutil.Process()
    start_rss = proc.memory_info().rss
    peak = [start_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    clock = CpuStageClock()
    wall, cpu = time.perf_counter(), time.process_time()
    model = fit_pair(plan, LocalSource(scenes), clock)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done.set()
    sampler.join()
    cpu_by_stage = clock.cpu_seconds
    stages = ", ".join(f"{k} {s:.1f} s wall / {cpu_by_stage[k]:.1f} s CPU" for k, s in clock.seconds.items())
    print(
        f"grid {plan.grid.height} x {plan.grid.width} px, {len(plan.tiles())} tiles, {args.workers} workers"
    )
    print(f"fit_pair: {wall:.1f} s wall, {cpu:.1f} s CPU ({stages})")
    print(f"RSS: {start_rss / 2**30:.2f} GiB before the fit, peak {peak[0] / 2**30:.2f} GiB")
    print(f"load average (1 min) at the end: {psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} cores")
    if args.json:
        args.json.write_text(model.model_dump_json(indent=1))


if __name__ == "__main__":
    main()
