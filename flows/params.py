"""Parameters of a nightly run (one pydantic model, the deployment's parameter schema) and the
two things derived from them: the settings and the scene source."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from imagery.aoi import load_aoi
from imagery.config import Settings, load_settings
from imagery.errors import InputError, VigiaError
from imagery.pipeline import RunPlan, plan_run
from imagery.sources.base import SceneSource

#: Scene source names `make_source` knows.
SOURCES = ("local", "stac", "sentinelhub")


class NightlyParams(BaseModel):
    """Parameters of one nightly run."""

    aoi: str = Field("lima_callao", description="AOI name (lima_callao, lima, callao) or vector file path.")
    source: str = Field("local", description="Scene source: local (folder of scenes) or stac (STAC API).")
    local_root: str | None = Field(None, description="Folder of scenes for the local source.")
    run_date: str | None = Field(None, description="YYYY-MM-DD; default today.")
    after_days: int = Field(30, ge=1, le=366, description="Length of the after period (days).")
    before_days: int = Field(30, ge=1, le=366, description="Length of the before period (days).")
    before_offset_days: int = Field(
        365, ge=1, description="How far back the before period ends (365: same season last year)."
    )
    max_cloud: float = Field(80.0, ge=0, le=100, description="Catalogue cloud-cover limit per scene, %.")
    score_threshold: float | None = Field(
        None, gt=0, lt=1, description="change_score above which a pixel is changed (default: settings)."
    )
    min_mapping_unit_ha: float | None = Field(
        None, ge=0, description="Smallest change patch kept, hectares (default: settings)."
    )
    tile_size_px: int | None = Field(None, ge=128, le=8192, description="Tile edge (default: settings).")
    output_root: str = Field("output", description="Runs are published under OUTPUT/<aoi>/<date>.")
    districts: str | None = Field(
        None, description="District polygons for hotspot attribution (default: layers.districts_file)."
    )
    keep_runs: int | None = Field(None, ge=0, description="Published runs kept per AOI (0: all).")
    ledger_url: str | None = Field(None, description="SQLAlchemy URL of the ledger (default: SQLite).")
    dask_address: str | None = Field(None, description="tcp://host:8786 of a Dask scheduler.")
    workers: int | None = Field(None, ge=0, description="Local Dask threads (0: one per core).")
    config_file: str | None = Field(None, description="TOML settings file.")

    def day(self) -> str:
        """The run date, YYYY-MM-DD."""
        return self.run_date or date.today().isoformat()

    def periods(self) -> tuple[tuple[date, date], tuple[date, date]]:
        """(before, after) date windows, inclusive."""
        end = date.fromisoformat(self.day())
        after = (end - timedelta(days=self.after_days - 1), end)
        before_end = end - timedelta(days=self.before_offset_days)
        return (before_end - timedelta(days=self.before_days - 1), before_end), after


def settings_for(params: NightlyParams) -> Settings:
    """Settings of the run: config file / VIGIA_* environment, overridden by the parameters."""
    change: dict[str, Any] = {}
    if params.score_threshold is not None:
        change["score_threshold"] = params.score_threshold
    if params.min_mapping_unit_ha is not None:
        change["min_mapping_unit_ha"] = params.min_mapping_unit_ha
    return load_settings(
        Path(params.config_file) if params.config_file else None,
        dask_address=params.dask_address, tile_size_px=params.tile_size_px, workers=params.workers,
        output_root=params.output_root, keep_runs=params.keep_runs, ledger_url=params.ledger_url,
        change=change or None,
    )  # fmt: skip


def make_source(params: NightlyParams, settings: Settings) -> SceneSource:
    """The scene source named by `params.source`: the one place a source name becomes a source."""
    if params.source == "local":
        from imagery.sources.local import LocalSource

        if not params.local_root:
            raise InputError("source local: parameter local_root (folder of scenes) is required")
        return LocalSource(Path(params.local_root))
    if params.source == "stac":
        from imagery.sources.cache import FetchCache
        from imagery.sources.stac import StacSource

        cache = FetchCache(settings.cache_dir / "stac")
        return StacSource(settings.stac_url, settings.stac_collection, cache, settings.retry)
    if params.source == "sentinelhub":
        from imagery.sources.sentinelhub import SentinelHubSource

        return SentinelHubSource(with_secret_block(settings))
    raise InputError(f"source {params.source}: unknown (expected {' or '.join(SOURCES)})")


def search_and_plan(params: NightlyParams, settings: Settings, source: SceneSource) -> RunPlan:
    """Search both periods of the run over its AOI and lay out the grid and tiles."""
    aoi = load_aoi(params.aoi)
    (b0, b1), (a0, a1) = params.periods()
    before = source.search(aoi, b0, b1, params.max_cloud)
    after = source.search(aoi, a0, a1, params.max_cloud)
    if not before or not after:
        raise InputError(
            f"no scenes: {len(before)} in before period {b0}..{b1}, {len(after)} in after {a0}..{a1}"
        )
    return plan_run(aoi, before, after, settings)


def with_secret_block(settings: Settings) -> Settings:
    """Settings with the Sentinel Hub credentials of the Prefect Secret block `sh_secret_block`
    (a JSON value {"client_id": ..., "client_secret": ...}), unless the environment already sets them."""
    name = settings.sh_secret_block
    if not name or (settings.sh_client_id and settings.sh_client_secret):
        return settings
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()  # type: ignore[union-attr]
    except ValueError:
        raise VigiaError(
            f"setting sh_secret_block: Prefect Secret block {name!r} not found "
            "(create it with client_id and client_secret)"
        ) from None
    if not isinstance(value, dict) or not {"client_id", "client_secret"} <= value.keys():
        raise VigiaError(
            f"setting sh_secret_block: Prefect Secret block {name!r} must hold "
            '{"client_id": ..., "client_secret": ...}'
        )
    return settings.model_copy(
        update={
            "sh_client_id": SecretStr(value["client_id"]),
            "sh_client_secret": SecretStr(value["client_secret"]),
        }
    )
