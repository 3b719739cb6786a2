"""Run the tiles of a plan on Dask and publish: the orchestration shared by the CLI and notebooks."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dask
import geopandas as gpd

from imagery.heap import keep_freed_arrays, long_lived_frozen, release_free_memory
from imagery.look_store import LookStore
from imagery.pipeline import PairModel, RunPlan, fit_pair, run_tile
from imagery.publish import publish
from imagery.sources.base import SceneSource
from imagery.sources.raster import drop_read_caches
from imagery.tilecache import cached_tile_path, tile_keys
from imagery.tilestore import load_tile, save_tile, tile_path

if TYPE_CHECKING:
    from distributed import LocalCluster


#: Free heap memory kept between tiles (the next tile allocates it again; returning it costs the
#: page faults and zeroing of fresh pages): 390-500 MiB on Lima tiles on two threads, steady over
#: the run (`keep_freed_arrays`; pages `release_free_memory` returned after the fit count too).
TILE_FREE_HEAP_BYTES = 2**30

#: Dask settings of the in-process cluster a run makes for itself (a cluster the caller runs keeps
#: its own): no statistical profiler (a stack sample of every task thread each 10 ms on the event
#: loop), the event loop's health checked every 500 ms instead of 20, no work stealing (one worker).
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.scheduler.work-stealing": False,
}


def tile_to_file(
    plan: RunPlan,
    model: PairModel,
    source: SceneSource,
    tile_name: str,
    path: Path,
    looks: LookStore | None = None,
) -> tuple[str, bool]:
    """Process one tile (with what the pair fit kept of it in `looks`) and store it at `path`; a
    tile already stored intact (readable, right shape) is reused, not recomputed. Returns (path, reused)."""
    tile = next(t for t in plan.tiles() if t.name == tile_name)
    stored = load_tile(path) if path.exists() else None
    if stored is not None and stored.score.shape == (tile.height, tile.width):
        return str(path), True
    path.parent.mkdir(parents=True, exist_ok=True)
    keep_freed_arrays()  # in the process that runs the tile (a Dask worker may be another one)
    saved = save_tile(run_tile(plan, model, source, tile, looks), path)
    release_free_memory(TILE_FREE_HEAP_BYTES)  # the tile's arrays are gone: keep memory flat over the run
    return str(saved), False


@dataclass(frozen=True)
class TileDone:
    """A finished tile: where its result is and whether an earlier run's file was reused."""

    tile: str
    key: str
    path: Path
    reused: bool


def local_cluster(workers: int = 0, memory_per_worker: str = "auto") -> LocalCluster:
    """An in-process Dask cluster sized to the machine: one thread per core (or `workers`), each
    worker's memory bounded (`auto`: the machine's memory split between workers), set up with
    LOCAL_CLUSTER_CONFIG (read when the scheduler and worker start: the global config is untouched)."""
    from distributed import LocalCluster

    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        return LocalCluster(
            n_workers=1, threads_per_worker=workers or os.cpu_count() or 1, processes=False,
            dashboard_address="127.0.0.1:0", memory_limit=memory_per_worker,  # loopback, free port
        )  # fmt: skip


@contextlib.contextmanager
def local_cluster_started(
    workers: int = 0, memory_per_worker: str = "auto"
) -> Iterator[Future[LocalCluster]]:
    """`local_cluster` started on a thread of its own, so that its start (importing Dask's
    distributed, the scheduler and worker) overlaps the work of the block, the pair fit; closed
    when the block ends."""
    starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cluster-start")
    future = starter.submit(local_cluster, workers, memory_per_worker)
    starter.shutdown(wait=False)
    try:
        yield future
    finally:
        if future.exception() is None:  # a failed start raises where the block asks for the cluster
            future.result().close()


@long_lived_frozen()  # the imports, plan and model: not scanned by the garbage collector during the tiles
def run_tiles(
    plan: RunPlan,
    model: PairModel,
    source: SceneSource,
    tile_dir: Path,
    *,
    cache_dir: Path | None = None,
    dask_address: str | None = None,
    workers: int = 0,
    memory_per_worker: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    cluster: LocalCluster | None = None,
    looks: LookStore | None = None,
) -> list[TileDone]:
    """Process every tile on Dask: the cluster at `dask_address`, else `cluster` (an in-process one
    the caller started, see `local_cluster_started`), else a local in-process one made here.
    `looks`: what the pair fit kept for the tiles (`fit_pair(looks=)`), emptied when all are done.

    Without `cache_dir` tiles are written as `tile_dir/<tile>.tile`. With it they are cached as
    `cache_dir/<tile>-<key>.tile` keyed on their inputs (reused by later runs) and `tile_dir`
    gets a link per tile, the layout `publish` reads. Tasks return file paths, never arrays.
    """
    from distributed import Client, as_completed

    tile_dir.mkdir(parents=True, exist_ok=True)
    keys = tile_keys(plan, model)
    targets = {
        t.name: cached_tile_path(cache_dir, t, keys[t.name]) if cache_dir else tile_path(tile_dir, t.name)
        for t in plan.tiles()
    }
    with contextlib.ExitStack() as stack:
        if dask_address:
            client = stack.enter_context(Client(dask_address))
        else:
            if cluster is None:
                cluster = stack.enter_context(local_cluster(workers, memory_per_worker))
            client = stack.enter_context(Client(cluster))
        order = [t.name for t in plan.tiles()]  # row by row: see grid.tile_anchor
        futures = {
            client.submit(
                tile_to_file, plan, model, source, name, targets[name], looks,
                key=f"vigia-tile-{name}-{keys[name]}", priority=len(order) - i,
            ): name
            for i, name in enumerate(order)
        }  # fmt: skip
        done = []
        for i, fut in enumerate(as_completed(futures), 1):
            path, reused = fut.result()
            name = futures[fut]
            done.append(TileDone(name, keys[name], Path(path), reused))
            if progress:
                progress(i, len(futures))
    drop_read_caches()  # an in-process cluster's reads: publish reads only the tile files
    release_free_memory()
    if looks is not None:
        looks.clear()  # the records of tiles reused from the cache were never taken
    if cache_dir:
        for item in done:
            _link(tile_path(tile_dir, item.tile), item.path)
    return sorted(done, key=lambda d: d.tile)


def _link(link: Path, target: Path) -> None:
    """Point `link` at `target` (replacing an older link atomically)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.lnk")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.resolve())
    os.replace(tmp, link)


def detect(
    plan: RunPlan,
    source: SceneSource,
    out_dir: Path,
    *,
    dask_address: str | None = None,
    districts: gpd.GeoDataFrame | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Path]:
    """Fit the pair, process all tiles and publish the layers into `out_dir` (without `dask_address`,
    the in-process cluster starts while the pair is fitted)."""
    tile_dir = out_dir / ".tiles"
    looks = LookStore(out_dir / ".looks", plan)
    keep_freed_arrays()  # before the cluster's threads start, so they share one heap too
    try:
        with contextlib.ExitStack() as stack:
            starting = (
                None if dask_address else stack.enter_context(local_cluster_started(plan.settings.workers))
            )
            model = fit_pair(plan, source, looks=looks)
            run_tiles(
                plan, model, source, tile_dir, dask_address=dask_address, workers=plan.settings.workers,
                progress=progress, cluster=starting.result() if starting else None, looks=looks,
            )  # fmt: skip
        return publish(plan, model, tile_dir, out_dir, districts=districts)
    finally:
        shutil.rmtree(tile_dir, ignore_errors=True)
        looks.clear()
