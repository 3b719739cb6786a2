"""The `vigia` command: detect, coregister, demo, serve, search, fetch, evaluate."""

from __future__ import annotations

import functools
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from imagery import __version__
from imagery.errors import VigiaError

app = typer.Typer(
    help="Vigía: Sentinel-2 change detection for Lima and Callao.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DEMO_DATA = Path("data/demo")
DEFAULT_DEMO_OUT = Path("output")
DaskOpt = Annotated[
    str | None, typer.Option("--dask-address", help="tcp://host:8786 of a Dask scheduler (default: local).")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file (under VIGIA_* env and flags).")
]


def one_line_errors(func: F) -> F:
    """Print user errors as one line on stderr and exit 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except VigiaError as exc:
            console.print(f"[bold red]vigia: error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.callback(invoke_without_command=True)
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Vigía: Sentinel-2 change detection for Lima and Callao."""
    if version:
        typer.echo(f"vigia {__version__}")
        raise typer.Exit(0)


@app.command()
@one_line_errors
def detect(
    before: Annotated[Path, typer.Argument(help="Before scene: folder of band files or multi-band GeoTIFF.")],
    after: Annotated[Path, typer.Argument(help="After scene, same forms as BEFORE.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for the layers.")],
    aoi: Annotated[
        str | None,
        typer.Option("--aoi", help="AOI name (lima_callao, lima, callao) or vector file."),
    ] = None,
    districts: Annotated[
        Path | None,
        typer.Option(
            "--districts",
            help="District polygons, any vector format (name: NOMBDIST/DISTRITO/..., code: IDDIST/UBIGEO/...;"
            " default: layers.districts_file setting).",
        ),
    ] = None,
    dask_address: Annotated[
        str | None, typer.Option("--dask-address", help="tcp://host:8786 of a Dask scheduler.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Detect change between two local scenes and write change_score.tif, change_class.tif,
    hotspots.geojson and run.json into OUT."""
    from imagery.aoi import load_aoi
    from imagery.config import load_settings
    from imagery.districts import configured_districts
    from imagery.execute import detect as run_detect
    from imagery.pipeline import plan_run
    from imagery.sources.local import LocalSource, open_scene

    settings = load_settings(config, dask_address=dask_address)
    plan = plan_run(load_aoi(aoi) if aoi else None, [open_scene(before)], [open_scene(after)], settings)
    district_frame = configured_districts(settings.layers, districts)
    existed = out.exists()
    try:
        outputs = run_detect(
            plan, LocalSource(before.parent), out,
            dask_address=settings.dask_address, districts=district_frame,
        )  # fmt: skip
    except BaseException:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        raise
    for note in plan.notes():
        console.print(f"note: {note}", highlight=False)
    for name, path in outputs.items():
        typer.echo(f"{name}: {path}")


@app.command()
@one_line_errors
def coregister(
    reference: Annotated[Path, typer.Argument(help="Reference scene (folder or multi-band GeoTIFF).")],
    target: Annotated[Path, typer.Argument(help="Target scene to register onto the reference.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for registered bands and shift.json.")],
    config: ConfigOpt = None,
) -> None:
    """Co-register TARGET onto REFERENCE's 10 m grid: writes the registered bands (GeoTIFF) and
    shift.json (dx_px, dy_px: target relative to reference, +x east, +y south; dx_m, dy_m: +y north)."""
    from imagery import coregister as coreg
    from imagery.config import load_settings
    from imagery.export import atomic_path, write_json
    from imagery.sources.local import open_scene, read_scene_bands, require_bands

    settings = load_settings(config)
    ref, tgt = open_scene(reference), open_scene(target)
    import rasterio
    from odc.geo.geobox import GeoBox

    require_bands(ref, ["B08"])
    require_bands(tgt, ["B08"])
    with rasterio.open(ref.assets["B08"]) as src:
        gbox = GeoBox.from_rio(src)
    bands = [b for b in tgt.assets if b != "SCL"]
    ref_nir = read_scene_bands(ref, ["B08"], gbox)["B08"]
    data = read_scene_bands(tgt, bands, gbox)
    model = coreg.estimate_shift(ref_nir, data["B08"], settings.coregistration)
    registered = coreg.apply_shift(np.stack([data[b] for b in bands]), model)
    out.mkdir(parents=True, exist_ok=True)
    for band, pixels in zip(bands, registered, strict=True):
        with atomic_path(out / f"{tgt.id}_{band}.tif") as tmp, rasterio.open(
            tmp, "w", driver="GTiff", width=gbox.shape.x, height=gbox.shape.y, count=1,
            dtype="float32", crs=str(gbox.crs), transform=gbox.affine, nodata=float("nan"),
            tiled=True, compress="deflate", predictor=3,
        ) as ds:  # fmt: skip
            ds.write(pixels, 1)
            ds.set_band_description(1, f"{band} reflectance")
    res = abs(gbox.resolution.x)
    # Metres on the map: +x east, +y north (pixels count rows southwards).
    info = model.model_dump(mode="json") | {"dx_m": model.dx_px * res, "dy_m": -model.dy_px * res}
    write_json(info, out / "shift.json")
    typer.echo(
        f"shift dx {model.dx_px:+.3f} px, dy {model.dy_px:+.3f} px "
        f"({model.n_tie_points} tie points, rmse {model.rmse_px:.3f} px, {model.method})"
    )


@app.command()
@one_line_errors
def demo(
    data: Annotated[Path, typer.Option("--data", help="Where the demo scenes are generated.")] = (
        DEFAULT_DEMO_DATA
    ),
    out: Annotated[Path, typer.Option("--out", help="Output root of the nightly run.")] = (DEFAULT_DEMO_OUT),
    districts: Annotated[
        Path | None,
        typer.Option("--districts", help="District polygons for the hotspots (e.g. INEI limits)."),
    ] = None,
    size: Annotated[int, typer.Option("--size", help="Demo area edge in pixels (small: quick).")] = 2560,
    dask_address: DaskOpt = None,
) -> None:
    """Generate the Lima demo scenes if missing, run the nightly Prefect flow on them, and score
    the result against the planted truth."""
    from imagery import demo as demo_data
    from imagery.evaluate import evaluate

    if districts is not None:  # fail before the run, not after it
        from imagery.config import LayerParams
        from imagery.districts import configured_districts

        configured_districts(LayerParams(), districts)
    console.print(f"demo data: {data} (generated on first use)", highlight=False)
    demo_data.generate(data, size_px=size)
    from flows.nightly import NightlyParams, nightly

    params = NightlyParams(
        aoi="lima_callao", source="local", local_root=str(data / "scenes"),
        run_date=demo_data.RUN_DATE, output_root=str(out), districts=str(districts) if districts else None,
        dask_address=dask_address,
    )  # fmt: skip
    run_dir = Path(nightly(params))
    scores = evaluate(run_dir / "change_class.tif", data / "truth.tif")
    typer.echo(f"layers: {run_dir}")
    for name in (
        "vigia.qgs",
        "report.html",
        "vigia.gpkg",
        "hotspots.geojson",
        "change_class.tif",
        "run.json",
    ):
        typer.echo(f"  {run_dir / name}")
    s = scores.summary()
    typer.echo(
        f"man-made change vs planted truth: precision {s['precision']:.3f}  recall {s['recall']:.3f}"
        f"  F1 {s['f1']:.3f}  IoU {s['iou']:.3f}"
    )


@app.command()
@one_line_errors
def serve(
    local_root: Annotated[
        Path | None, typer.Option("--local-root", help="Folder of scenes (source local).")
    ] = None,
    aoi: Annotated[str, typer.Option("--aoi", help="AOI name or vector file.")] = "lima_callao",
    source: SourceOpt = "local",
    out: Annotated[Path, typer.Option("--out", help="Output root of the runs.")] = DEFAULT_DEMO_OUT,
    dask_address: DaskOpt = None,
    cron: Annotated[str, typer.Option("--cron", help="Schedule (cron, in --timezone).")] = "0 3 * * *",
    timezone: Annotated[str, typer.Option("--timezone", help="Time zone of --cron.")] = "America/Lima",
    config: ConfigOpt = None,
) -> None:
    """Serve the nightly flow on its schedule from this process (needs no work pool or worker);
    runs until stopped."""
    from prefect.schedules import Cron

    from flows.nightly import NightlyParams, nightly

    params = NightlyParams(
        aoi=aoi, source=source, local_root=str(local_root.resolve()) if local_root else None,
        output_root=str(out.resolve()), dask_address=dask_address,
        config_file=str(config.resolve()) if config else None,
    )  # fmt: skip
    nightly.serve(
        name="nightly-serve", schedules=[Cron(cron, timezone=timezone)],
        parameters={"params": params.model_dump()}, limit=1,
    )  # fmt: skip


SourceOpt = Annotated[str, typer.Option("--source", help="Scene source: local, stac or sentinelhub.")]
LocalRootOpt = Annotated[Path | None, typer.Option("--local-root", help="Folder of scenes (source local).")]
AoiOpt = Annotated[str, typer.Option("--aoi", help="AOI name (lima_callao, lima, callao) or vector file.")]
RunDateOpt = Annotated[str | None, typer.Option("--run-date", help="YYYY-MM-DD (default: today).")]
AfterDaysOpt = Annotated[int, typer.Option("--after-days", help="Length of the after period (days).")]
BeforeDaysOpt = Annotated[int, typer.Option("--before-days", help="Length of the before period (days).")]
OffsetOpt = Annotated[
    int, typer.Option("--before-offset-days", help="How far back the before period ends (days).")
]
MaxCloudOpt = Annotated[float, typer.Option("--max-cloud", help="Catalogue cloud-cover limit per scene, %.")]


def _period_params(
    aoi: str, source: str, local_root: Path | None, run_date: str | None, after_days: int,
    before_days: int, before_offset_days: int, max_cloud: float, config: Path | None,
) -> Any:  # fmt: skip
    from flows.params import NightlyParams

    return NightlyParams(
        aoi=aoi, source=source, local_root=str(local_root) if local_root else None, run_date=run_date,
        after_days=after_days, before_days=before_days, before_offset_days=before_offset_days,
        max_cloud=max_cloud, config_file=str(config) if config else None,
    )  # fmt: skip


@app.command()
@one_line_errors
def search(
    aoi: AoiOpt = "lima_callao",
    source: SourceOpt = "local",
    local_root: LocalRootOpt = None,
    run_date: RunDateOpt = None,
    after_days: AfterDaysOpt = 30,
    before_days: BeforeDaysOpt = 30,
    before_offset_days: OffsetOpt = 365,
    max_cloud: MaxCloudOpt = 80.0,
    config: ConfigOpt = None,
) -> None:
    """List the scenes a run would use per period: date, cloud cover, processing baseline, and
    which scenes of the same day are merged into one look."""
    from flows.params import make_source, settings_for
    from imagery.aoi import load_aoi
    from imagery.scene_table import period_rows

    params = _period_params(
        aoi, source, local_root, run_date, after_days, before_days, before_offset_days, max_cloud, config
    )
    scene_source = make_source(params, settings_for(params))
    area = load_aoi(params.aoi)
    out = Console()
    for label, (start, end) in zip(("before", "after"), params.periods(), strict=True):
        scenes = scene_source.search(area, start, end, params.max_cloud)
        rows = period_rows(scenes)
        looks = len({s.acquired for s in scenes})
        table = Table(
            "date", "scene", "cloud %", "baseline", "offset", "merged",
            title=f"{label} {start}..{end}: {len(scenes)} scene(s), {looks} look(s)",
        )  # fmt: skip
        for row in rows:
            table.add_row(*row)
        out.print(table)


@app.command()
@one_line_errors
def fetch(
    aoi: AoiOpt = "lima_callao",
    source: SourceOpt = "stac",
    run_date: RunDateOpt = None,
    after_days: AfterDaysOpt = 30,
    before_days: BeforeDaysOpt = 30,
    before_offset_days: OffsetOpt = 365,
    max_cloud: MaxCloudOpt = 80.0,
    config: ConfigOpt = None,
) -> None:
    """Download into the cache (setting cache_dir) every band window a run of these periods over
    the AOI will read, so the run itself needs no network."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from flows.params import make_source, search_and_plan, settings_for
    from imagery.errors import InputError
    from imagery.prefetch import prefetch

    if source == "local":
        raise InputError("fetch: source local reads its files directly, there is nothing to download")
    params = _period_params(
        aoi, source, None, run_date, after_days, before_days, before_offset_days, max_cloud, config
    )
    settings = settings_for(params)
    scene_source = make_source(params, settings)
    plan = search_and_plan(params, settings, scene_source)
    columns = (TextColumn("fetch"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("fetch", total=None)
        n = prefetch(plan, scene_source, lambda done, total: bar.update(task, completed=done, total=total))
    typer.echo(
        f"cached {n} scene windows ({len(plan.before)} before, {len(plan.after)} after scene(s)) "
        f"under {settings.cache_dir}"
    )


@app.command()
@one_line_errors
def evaluate(
    predicted: Annotated[Path | None, typer.Argument(help="change_class.tif to score.")] = None,
    truth: Annotated[Path | None, typer.Argument(help="Truth raster (0/1 or class codes).")] = None,
    dataset: Annotated[
        Path | None,
        typer.Option("--dataset", help="OSCD-style folder of cities (before/, after/, truth.tif)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="With --dataset: where each city's layers go.")
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="With --dataset: 'vigia' or the 'cva-otsu' baseline.")
    ] = "vigia",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Score man-made change (classes 1-3) against truth: PREDICTED TRUTH, or every city of
    --dataset (per city and pooled over all pixels)."""
    from imagery.errors import InputError
    from imagery.evaluate import Scores
    from imagery.evaluate import evaluate as score

    rows: dict[str, Scores] = {}
    if dataset is not None:
        from imagery.oscd import evaluate_dataset

        rows = evaluate_dataset(dataset, out or Path("output/evaluate"), method=method, config=config)
    elif predicted is not None and truth is not None:
        rows = {predicted.parent.name or str(predicted): score(predicted, truth)}
    else:
        raise InputError("evaluate: give PREDICTED TRUTH, or --dataset FOLDER")
    _print_scores(rows, as_json)


def _print_scores(rows: dict[str, Any], as_json: bool) -> None:
    from imagery.evaluate import pooled

    table_rows = dict(rows)
    if len(rows) > 1:
        table_rows["pooled"] = pooled(rows.values())
    if as_json:
        typer.echo(json.dumps({k: v.summary() for k, v in table_rows.items()}, indent=2))
        return
    table = Table("scene", "precision", "recall", "F1", "IoU", "changed px (truth)")
    for name, s in table_rows.items():
        d = s.summary()
        table.add_row(
            name, f"{d['precision']:.3f}", f"{d['recall']:.3f}", f"{d['f1']:.3f}",
            f"{d['iou']:.3f}", str(s.tp + s.fn),
        )  # fmt: skip
    Console().print(table)


def run() -> None:
    """Entry point used by `python -m imagery.cli`."""
    app(prog_name="vigia")


if __name__ == "__main__":
    run()
    sys.exit(0)
