"""Fill a source's download cache with everything a run will read, before the run."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from odc.geo.geobox import GeoBox

from imagery.pipeline import RunPlan, read_look, read_windows
from imagery.sentinel2 import CHANGE_BANDS
from imagery.sources.base import Scene, SceneSource

#: Downloads in flight at once (I/O bound: a few connections, not one per core).
FETCH_THREADS = 4


def prefetch(
    plan: RunPlan,
    source: SceneSource,
    progress: Callable[[int, int], None] | None = None,
    threads: int = FETCH_THREADS,
) -> int:
    """Read every scene of both periods on every window the run reads (`pipeline.read_windows`)
    the way the run reads it (`pipeline.read_look`: SCL first, the change bands where the scene is
    clear enough); returns the number of scene windows visited."""
    jobs = [(scene, window) for window in read_windows(plan) for scene in [*plan.before, *plan.after]]

    def read(job: tuple[Scene, GeoBox]) -> None:
        scene, window = job
        read_look(source, scene, CHANGE_BANDS, window, plan.settings.mask)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for done, _ in enumerate(pool.map(read, jobs), 1):
            if progress:
                progress(done, len(jobs))
    return len(jobs)
