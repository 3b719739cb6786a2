"""Run the tiles of a plan on Dask and publish: the orchestration shared by the CLI and notebooks."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import dask.base
import geopandas as gpd

from imagery.pipeline import PairModel, RunPlan, fit_pair, run_tile
from imagery.publish import publish
from imagery.sources.base import SceneSource
from imagery.tilestore import load_tile, save_tile, tile_path


def tile_to_file(
    plan: RunPlan, model: PairModel, source: SceneSource, tile_name: str, tile_dir: Path
) -> Path:
    """Process one tile and store it; a tile already stored intact is reused, not recomputed."""
    path = tile_path(tile_dir, tile_name)
    if path.exists() and load_tile(path) is not None:
        return path
    tile = next(t for t in plan.tiles() if t.name == tile_name)
    return save_tile(run_tile(plan, model, source, tile), path)


def run_tiles(
    plan: RunPlan,
    model: PairModel,
    source: SceneSource,
    tile_dir: Path,
    *,
    dask_address: str | None = None,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Process every tile on Dask: the cluster at `dask_address`, else a local in-process one.

    Tasks return tile file paths, never arrays; keys are deterministic per run grid and tile.
    """
    from distributed import Client, LocalCluster, as_completed

    tile_dir.mkdir(parents=True, exist_ok=True)
    names = [t.name for t in plan.tiles()]
    token = dask.base.tokenize(plan.model_dump_json(), model.model_dump_json())
    with contextlib.ExitStack() as stack:
        if dask_address:
            client = stack.enter_context(Client(dask_address))
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=1,
                    threads_per_worker=workers or os.cpu_count() or 1,
                    processes=False,
                    dashboard_address=None,
                )  # fmt: skip
            )
            client = stack.enter_context(Client(cluster))
        futures = [
            client.submit(tile_to_file, plan, model, source, n, tile_dir, key=f"vigia-tile-{n}-{token}")
            for n in names
        ]
        done = []
        for i, fut in enumerate(as_completed(futures), 1):
            done.append(Path(fut.result()))
            if progress:
                progress(i, len(names))
        return sorted(done)


def detect(
    plan: RunPlan,
    source: SceneSource,
    out_dir: Path,
    *,
    dask_address: str | None = None,
    districts: gpd.GeoDataFrame | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Path]:
    """Fit the pair, process all tiles and publish the layers into `out_dir`."""
    model = fit_pair(plan, source)
    tile_dir = out_dir / ".tiles"
    try:
        run_tiles(
            plan, model, source, tile_dir, dask_address=dask_address,
            workers=plan.settings.workers, progress=progress,
        )  # fmt: skip
        return publish(plan, model, tile_dir, out_dir, districts=districts)
    finally:
        shutil.rmtree(tile_dir, ignore_errors=True)
