"""The nightly flow: search both periods, fit the pair, process changed tiles on Dask, publish a
complete run folder, record it in the ledger, and report it as Prefect artifacts."""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from flows.params import NightlyParams, settings_for
from flows.summary import hotspot_properties, summary_markdown, top_hotspots_table
from flows.tasks import fit_task, plan_task, publish_task, tiles_task
from imagery.ledger import Ledger, TileRecord, ledger_url
from imagery.runs import prune_runs, prune_tile_cache, tile_cache_dir, work_dir

__all__ = ["NightlyParams", "nightly"]


def _retention(ledger: Ledger, aoi_dir: Path, keep_runs: int) -> None:
    """Keep the newest `keep_runs` run folders and the cached tiles they used (0: keep all)."""
    if keep_runs <= 0:
        return
    logger = get_run_logger()
    for old in prune_runs(aoi_dir, keep_runs):
        logger.info("retention: removed run %s", old)
    kept = [p.name for p in aoi_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    removed = prune_tile_cache(
        tile_cache_dir(aoi_dir.parent, aoi_dir.name), ledger.tile_files(aoi_dir.name, kept)
    )
    if removed:
        logger.info("retention: removed %d cached tiles no kept run uses", len(removed))


@flow(name="vigia-nightly", log_prints=True)
def nightly(params: NightlyParams) -> str:
    """One nightly run: returns the published run folder."""
    settings = settings_for(params)
    output_root = Path(params.output_root)
    run_date = params.day()
    plan = plan_task(params)
    ledger = Ledger(ledger_url(output_root, settings.ledger_url))
    run_id = ledger.start_run(plan.aoi_name, run_date, str(flow_run.get_id() or ""))
    try:
        ledger.record_scenes(run_id, {"before": plan.before, "after": plan.after})
        work = work_dir(output_root, plan.aoi_name, run_date)
        model = fit_task(plan, params, work / "looks")
        tile_dir = work / "tiles"
        tiles = tiles_task(
            plan, model, params, tile_cache_dir(output_root, plan.aoi_name), tile_dir, work / "looks"
        )
        ledger.record_tiles(run_id, [TileRecord(**t) for t in tiles])
        seen = ledger.seen_before(plan.aoi_name, run_date)
        outputs = publish_task(plan, model, params, tile_dir, seen)
        published = Path(outputs["run"]).parent
        ledger.record_outputs(run_id, {k: Path(v) for k, v in outputs.items()})
        ledger.record_hotspots(plan.aoi_name, run_date, hotspot_properties(published))
        ledger.finish_run(run_id, "completed", str(published))
    except BaseException:
        ledger.finish_run(run_id, "failed")
        raise
    else:
        shutil.rmtree(tile_dir.parent, ignore_errors=True)
        _retention(ledger, output_root / plan.aoi_name, settings.keep_runs)
    finally:
        ledger.close()
    reused = sum(t["reused"] for t in tiles)
    create_markdown_artifact(
        key="vigia-nightly-summary",
        markdown=summary_markdown(published, reused, len(tiles)),
        description="Vigía nightly run summary",
    )
    create_table_artifact(
        key="vigia-top-hotspots", table=top_hotspots_table(published), description="Top hotspots by priority"
    )
    return str(published)
