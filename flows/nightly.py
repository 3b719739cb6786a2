"""The nightly flow: search both periods, fit the pair, process tiles on Dask, publish a run."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from imagery.aoi import load_aoi
from imagery.config import Settings, load_settings
from imagery.districts import configured_districts
from imagery.errors import InputError
from imagery.execute import run_tiles
from imagery.pipeline import PairModel, RunPlan, fit_pair, plan_run
from imagery.publish import publish
from imagery.runs import point_latest, run_dir, staging, work_dir
from imagery.sources.base import SceneSource
from imagery.sources.local import LocalSource


class NightlyParams(BaseModel):
    """Parameters of one nightly run."""

    aoi: str = Field("lima_callao", description="AOI name or vector file path.")
    source: str = Field("local", description="Scene source: local (sentinelhub, stac: see README).")
    local_root: str | None = Field(None, description="Folder of scenes for the local source.")
    run_date: str | None = Field(None, description="YYYY-MM-DD; default today.")
    after_days: int = Field(30, ge=1, le=366, description="Length of the after period (days).")
    before_days: int = Field(30, ge=1, le=366, description="Length of the before period (days).")
    before_offset_days: int = Field(
        365, ge=1, description="How far back the before period ends (365: same season last year)."
    )
    max_cloud: float = Field(80.0, ge=0, le=100, description="Catalogue cloud-cover limit, %.")
    output_root: str = Field("output", description="Runs are published under OUTPUT/<aoi>/<date>.")
    dask_address: str | None = Field(None, description="tcp://host:8786 of a Dask scheduler.")
    config_file: str | None = Field(None, description="TOML settings file.")
    districts: str | None = Field(
        None, description="District polygons for hotspot attribution (default: layers.districts_file)."
    )

    def periods(self) -> tuple[tuple[date, date], tuple[date, date]]:
        """(before, after) date windows, inclusive."""
        end = date.fromisoformat(self.run_date) if self.run_date else date.today()
        after = (end - timedelta(days=self.after_days - 1), end)
        before_end = end - timedelta(days=self.before_offset_days)
        return (before_end - timedelta(days=self.before_days - 1), before_end), after


def make_source(params: NightlyParams, settings: Settings) -> SceneSource:
    """The scene source named by the parameters."""
    if params.source == "local":
        if not params.local_root:
            raise InputError("source local: parameter local_root (folder of scenes) is required")
        return LocalSource(Path(params.local_root))
    raise InputError(f"source {params.source}: unknown (expected local)")


@task(name="plan", retries=2, retry_delay_seconds=10)
def plan_task(params: NightlyParams) -> RunPlan:
    """Search both periods and lay out the grid and tiles."""
    settings = load_settings(Path(params.config_file) if params.config_file else None,
                             dask_address=params.dask_address)  # fmt: skip
    source = make_source(params, settings)
    aoi = load_aoi(params.aoi)
    (b0, b1), (a0, a1) = params.periods()
    before = source.search(aoi, b0, b1, params.max_cloud)
    after = source.search(aoi, a0, a1, params.max_cloud)
    if not before or not after:
        raise InputError(
            f"no scenes: {len(before)} in before period {b0}..{b1}, {len(after)} in after {a0}..{a1}"
        )
    return plan_run(aoi, before, after, settings)


@task(name="fit-pair")
def fit_task(plan: RunPlan, params: NightlyParams) -> PairModel:
    """Co-registration, normalisation and change model, fitted once per pair."""
    return fit_pair(plan, make_source(params, plan.settings))


@task(name="process-tiles")
def tiles_task(plan: RunPlan, model: PairModel, params: NightlyParams, tile_dir: Path) -> list[str]:
    """Every tile on Dask; returns tile file paths."""
    logger = get_run_logger()

    def progress(done: int, total: int) -> None:
        logger.info("tiles %d/%d", done, total)

    paths = run_tiles(
        plan, model, make_source(params, plan.settings), tile_dir,
        dask_address=plan.settings.dask_address, workers=plan.settings.workers, progress=progress,
    )  # fmt: skip
    return [str(p) for p in paths]


@task(name="publish")
def publish_task(plan: RunPlan, model: PairModel, params: NightlyParams, tile_dir: Path) -> str:
    """Write the layers into a staging folder, then swap it into place and repoint `latest`."""
    final = run_dir(Path(params.output_root), plan.aoi_name, _run_date(params))
    districts = configured_districts(
        plan.settings.layers, Path(params.districts) if params.districts else None
    )
    with staging(final) as tmp:
        publish(plan, model, tile_dir, tmp, districts=districts)
    point_latest(final)
    return str(final)


def _run_date(params: NightlyParams) -> str:
    return params.run_date or date.today().isoformat()


@flow(name="vigia-nightly", log_prints=True)
def nightly(params: NightlyParams) -> str:
    """One nightly run: returns the published run folder."""
    plan = plan_task(params)
    model = fit_task(plan, params)
    tile_dir = work_dir(Path(params.output_root), plan.aoi_name, _run_date(params)) / "tiles"
    tiles_task(plan, model, params, tile_dir)
    published = publish_task(plan, model, params, tile_dir)
    shutil.rmtree(tile_dir.parent, ignore_errors=True)
    shift = model.shift.global_model
    local = sum(t.source == "local" for t in model.shift.tiles)
    create_markdown_artifact(
        key="vigia-nightly-summary",
        markdown=(
            f"# Vigía run {plan.aoi_name} {_run_date(params)}\n\n"
            f"- before: {', '.join(s.id for s in plan.before)}\n"
            f"- after: {', '.join(s.id for s in plan.after)}\n"
            f"- co-registration: dx {shift.dx_px:+.2f} px, dy {shift.dy_px:+.2f} px "
            f"({shift.n_tie_points} tie points, {shift.method}, rmse {shift.rmse_px:.2f} px; "
            f"{local}/{len(model.shift.tiles)} tiles corrected locally)\n"
            f"- published: `{published}`\n"
        ),
        description="Vigía nightly run summary",
    )
    return published
