"""Prefect tasks: thin wrappers of imagery calls. They take and return small values and paths."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import geopandas as gpd
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.states import State

from flows.params import NightlyParams, make_source, search_and_plan, settings_for
from imagery.config import Settings
from imagery.districts import configured_districts
from imagery.errors import VigiaError
from imagery.execute import run_tiles
from imagery.hotspots import SeenBefore
from imagery.look_store import LookStore
from imagery.pipeline import PairModel, RunPlan, fit_pair
from imagery.publish import publish
from imagery.runs import point_latest, run_dir, staging


def retry_unless_permanent(task: Any, task_run: Any, state: State[Any]) -> bool:
    """Retry a failed task only for faults that may pass: a VigiaError (bad input, refused
    credentials, a source that already spent its own retries) would fail the same way again."""
    try:
        state.result()
    except VigiaError:
        return False
    except Exception:
        return True
    return True


def run_districts(params: NightlyParams, settings: Settings) -> gpd.GeoDataFrame | None:
    """The district layer of the run: the `districts` parameter, else the settings' file, else none."""
    override = Path(params.districts) if params.districts else None
    return configured_districts(settings.layers, override, override_name="parameter districts")


@task(name="plan", retries=2, retry_delay_seconds=10, retry_condition_fn=retry_unless_permanent)
def plan_task(params: NightlyParams) -> RunPlan:
    """Search both periods (a catalogue call: retried) and lay out the grid and tiles."""
    settings = settings_for(params)
    source = make_source(params, settings)
    run_districts(params, settings)  # a bad district file fails the run here, not after all tiles
    return search_and_plan(params, settings, source)


@task(
    name="fit-pair", retries=2, retry_delay_seconds=10, retry_condition_fn=retry_unless_permanent,
    cache_policy=(INPUTS - "looks_dir") + TASK_SOURCE,
    persist_result=True, cache_expiration=timedelta(days=30),
)  # fmt: skip
def fit_task(plan: RunPlan, params: NightlyParams, looks_dir: Path) -> PairModel:
    """Co-registration, normalisation and change model, fitted once per pair (cached on the plan;
    when fitted, what its tie points decode is kept in `looks_dir` for the tiles)."""
    return fit_pair(plan, make_source(params, plan.settings), looks=LookStore(looks_dir, plan))


@task(name="process-tiles", retries=1, retry_delay_seconds=10, retry_condition_fn=retry_unless_permanent)
def tiles_task(
    plan: RunPlan, model: PairModel, params: NightlyParams, cache_dir: Path, tile_dir: Path, looks_dir: Path
) -> list[dict[str, Any]]:
    """Every tile on Dask, tiles whose inputs are unchanged reused from the cache (what the fit
    kept in `looks_dir` used and then deleted); returns one record (tile, cache key, file path,
    reused) per tile."""
    logger = get_run_logger()
    n = len(plan.tiles())
    artifact = cast(
        UUID, create_progress_artifact(progress=0.0, key="vigia-tiles", description=f"tiles of {n}")
    )

    def progress(done: int, total: int) -> None:
        logger.info("tiles %d/%d", done, total)
        update_progress_artifact(artifact_id=artifact, progress=100.0 * done / total)

    done = run_tiles(
        plan, model, make_source(params, plan.settings), tile_dir, cache_dir=cache_dir,
        dask_address=plan.settings.dask_address, workers=plan.settings.workers,
        memory_per_worker=plan.settings.worker_memory, progress=progress,
        looks=LookStore(looks_dir, plan),
    )  # fmt: skip
    reused = sum(d.reused for d in done)
    logger.info("tiles: %d computed, %d reused from the cache", len(done) - reused, reused)
    return [{"tile": d.tile, "cache_key": d.key, "path": str(d.path), "reused": d.reused} for d in done]


@task(name="publish")
def publish_task(
    plan: RunPlan, model: PairModel, params: NightlyParams, tile_dir: Path, seen: SeenBefore
) -> dict[str, str]:
    """Write the layers into a staging folder, swap it into OUTPUT/<aoi>/<date>, repoint `latest`.
    `seen`: earlier sightings of hotspots (from the ledger) for first_seen/last_seen/status."""
    final = run_dir(Path(params.output_root), plan.aoi_name, params.day())
    districts = run_districts(params, plan.settings)
    with staging(final) as tmp:
        outputs = publish(plan, model, tile_dir, tmp, districts=districts, seen=seen)
        relative = {name: Path(path).relative_to(tmp) for name, path in outputs.items()}
    point_latest(final)
    return {name: str(final / rel) for name, rel in relative.items()}
