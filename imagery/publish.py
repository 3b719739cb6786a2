"""Mosaic tile results into the published layers: COG rasters, hotspots, run metadata."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import geopandas as gpd
import numba
import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.windows import Window

from imagery import __version__
from imagery.band_statistics import BandStatistics
from imagery.components import strip_bounds
from imagery.districts import district_summary
from imagery.export import (
    CLASS_NODATA,
    SCORE_MAX_ERROR,
    finish_cog,
    write_cog,
    write_json,
)
from imagery.grid import Tile, pixel_area_m2
from imagery.hotspots import HotspotStats, PatchSieve, SeenBefore, attribute_districts, mark_history
from imagery.layers import write_vector_layers
from imagery.pipeline import PairModel, RunPlan, TileResult
from imagery.priority_grid import GridStats
from imagery.report import map_png, write_report
from imagery.stageclock import HOTSPOTS, METADATA, MOSAIC, StageClock
from imagery.tile_strips import TileStrips
from imagery.tilestore import load_tile, tile_path

Written = TypeVar("Written")

SCORE_DESCRIPTION = "change_score (0 no change .. 1 certain change)"
CLASS_DESCRIPTION = (
    "change_class (0 none,1 built-up gain,2 clearing,3 demolition,4 veg loss,5 veg gain,6 water)"
)


#: Rows of the mosaic held at a time while sieving and summarising it (whole scratch blocks).
STRIP_ROWS = 512


class Mosaic(NamedTuple):
    """The scratch mosaics of a run and what was counted while writing them."""

    score: Path
    classes: Path
    coverage: dict[str, Any]
    score_statistics: BandStatistics


def mosaic(
    plan: RunPlan,
    tile_dir: Path,
    scratch_dir: Path,
    *,
    patches: PatchSieve | None = None,
    strip_rows: int = STRIP_ROWS,
) -> Mosaic:
    """Assemble tile files into scratch score/class GeoTIFFs; returns paths, coverage and the score's
    band statistics (summed per tile, so the score COG need not read the mosaic for them).

    The next tile is read (and its coverage counted) in a thread while this one is written: file
    reads and GDAL writes release the GIL, and memory holds two tiles. With `patches` (an empty
    `PatchSieve`), each strip of `strip_rows` rows of the class mosaic is fed to it, in a thread,
    from the tiles in memory as soon as the tiles covering it are written, and the sieve finished:
    what `find_patches` finds in the written mosaic, without reading it again."""
    from imagery.export import scratch_raster

    gbox = plan.grid.geobox()
    score_path, class_path = scratch_dir / "score.tif", scratch_dir / "class.tif"
    looks_b, looks_a, valid = 0, 0, 0
    statistics = BandStatistics()
    strips = TileStrips(gbox.shape.y, gbox.shape.x, strip_rows, np.uint8, CLASS_NODATA)
    with (
        scratch_raster(score_path, gbox, "float32", float("nan")) as score_ds,
        scratch_raster(class_path, gbox, "uint8", CLASS_NODATA) as class_ds,
        _StripFeeder(patches) as feed,
    ):
        for tile, result, counts, tile_statistics in _read_ahead(tile_dir, plan.tiles()):
            window = Window(tile.col0, tile.row0, tile.width, tile.height)
            # As one-band 3-D views: given a 2-D array, rasterio copies it into a new 3-D one first.
            score_ds.write(result.score[np.newaxis], [1], window=window)
            class_ds.write(result.classes[np.newaxis], [1], window=window)
            valid, looks_b, looks_a = valid + counts[0], looks_b + counts[1], looks_a + counts[2]
            statistics.merge(tile_statistics)
            if patches is not None:
                feed(strips.add(tile.row0, tile.col0, result.classes))
        if patches is not None:
            feed(strips.finish())
            feed.finish()
    total = gbox.shape.x * gbox.shape.y
    coverage = {
        "pixels": total,
        "valid_fraction": round(valid / total, 4) if total else 0.0,
        "mean_valid_looks_before": round(looks_b / valid, 2) if valid else 0.0,
        "mean_valid_looks_after": round(looks_a / valid, 2) if valid else 0.0,
    }
    return Mosaic(score_path, class_path, coverage, statistics)


class _StripFeeder:
    """Strips fed in order to a `PatchSieve` in a thread (its labelling releases the GIL) while the
    caller goes on; at most `AHEAD` strips wait in memory. An error in the thread is raised by the
    next call."""

    AHEAD = 4

    def __init__(self, sieve: PatchSieve | None) -> None:
        self._sieve = sieve
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="vigia-sieve")
        self._pending: deque[Future[None]] = deque()

    def __enter__(self) -> _StripFeeder:
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._pending:
            future.cancel()
        self._thread.shutdown(wait=True)

    def __call__(self, strips: Sequence[np.ndarray]) -> None:
        """Queue `strips` (the next ones, top first)."""
        assert self._sieve is not None
        for strip in strips:
            while len(self._pending) >= self.AHEAD:
                self._pending.popleft().result()
            self._pending.append(self._thread.submit(self._sieve.add, strip))

    def finish(self) -> None:
        """Wait for the queued strips, then resolve the sieve's patches."""
        assert self._sieve is not None
        while self._pending:
            self._pending.popleft().result()
        self._sieve.finish()


def _read_ahead(
    tile_dir: Path, tiles: Sequence[Tile]
) -> Iterator[tuple[Tile, TileResult, tuple[int, int, int], BandStatistics]]:
    """Each tile with its result and counts (`_load_counted`), in order; the next tile is read in a
    thread while the caller handles this one."""
    with ThreadPoolExecutor(1, thread_name_prefix="vigia-tiles") as reader:
        pending = [reader.submit(_load_counted, tile_dir, tile.name) for tile in tiles[:1]]
        for index, tile in enumerate(tiles):
            loaded = pending.pop().result()
            if index + 1 < len(tiles):
                pending.append(reader.submit(_load_counted, tile_dir, tiles[index + 1].name))
            yield tile, *loaded


def _load_counted(tile_dir: Path, name: str) -> tuple[TileResult, tuple[int, int, int], BandStatistics]:
    """A tile's result, its valid pixels and looks before/after summed over them, its score's statistics."""
    result = load_tile(tile_path(tile_dir, name), verify=False)  # written or checked by this run
    if result is None:
        raise RuntimeError(f"tile {name} has no result in {tile_dir}")
    ok = result.classes != CLASS_NODATA
    counts = int(ok.sum()), int(result.looks_before[ok].sum()), int(result.looks_after[ok].sum())
    return result, counts, BandStatistics.of(result.score)


#: GDAL settings while the tiles are written into the scratch mosaics: a bounded block cache (bytes)
#: that holds the partly written blocks of a row of tiles (GDAL's default, 5 % of the machine's
#: memory, would hold whole scratch rasters in memory).
MOSAIC_WRITE_ENV = {"GDAL_CACHEMAX": 256 * 2**20}
#: GDAL settings for the rest of publish (sieve, COG encodes, report). The cache size is one setting
#: for the whole process (rasterio sets it with GDALSetCacheMax), so this bounds the COG thread too:
#: the encodes read each scratch block a few times at most, and with the larger cache their last
#: phase, once it outlasted the sieve, added ~0.15 GiB to publish's peak at Lima size.
GDAL_WRITE_ENV = {"GDAL_CACHEMAX": 64 * 2**20}


def publish(
    plan: RunPlan,
    model: PairModel,
    tile_dir: Path,
    out_dir: Path,
    *,
    districts: gpd.GeoDataFrame | None = None,
    seen: SeenBefore | None = None,
    clock: StageClock | None = None,
) -> dict[str, Path]:
    """Write the run's layers into `out_dir`: change_score.tif, change_class.tif, hotspots.geojson,
    priority_grid.geojson, vigia.gpkg, QGIS styles and project, and run.json.

    `districts`: boundaries as from `imagery.districts.load_districts` (district, ubigeo).
    `seen`: what earlier runs saw (hotspot id -> first/last seen), from the run ledger; without
    it every hotspot is "new". `clock` collects the seconds per stage."""
    clock = clock or StageClock()
    with rasterio.Env(**GDAL_WRITE_ENV), ThreadPoolExecutor(1, thread_name_prefix="vigia-cog") as cogs:
        out_dir.mkdir(parents=True, exist_ok=True)
        scratch_dir = out_dir / ".scratch"
        scratch_dir.mkdir(exist_ok=True)
        gbox = plan.grid.geobox()
        min_px = max(1, math.ceil(plan.settings.change.min_mapping_unit_ha * 10_000 / pixel_area_m2(gbox)))
        patches = PatchSieve(min_px)
        with clock.stage(MOSAIC), rasterio.Env(**MOSAIC_WRITE_ENV):
            score_tmp, class_tmp, coverage, score_statistics = mosaic(
                plan, tile_dir, scratch_dir, patches=patches
            )
        # The COG encodes run in a thread beside the hotspot work (GDAL releases the GIL): the
        # score's once the mosaic is written, the class's once the minimum mapping unit has sieved
        # it, then the report's map drawn from it, beside the vector layers. (The class COG in a
        # thread of its own, beside the score's, added ~0.1 GiB to publish's peak at Lima size.)
        # The score's description and statistics go into the COG, not into the scratch file, which
        # the hotspot pass reads meanwhile.
        score_cog = cogs.submit(
            _timed, clock, write_cog, score_tmp, out_dir / "change_score.tif", categorical=False,
            predictor="FLOATING_POINT", max_error=SCORE_MAX_ERROR, description=SCORE_DESCRIPTION,
            statistics=score_statistics.gdal_tags(),
        )  # fmt: skip
        with clock.stage(HOTSPOTS):
            before_date = max(s.acquired for s in plan.before)
            after_date = max(s.acquired for s in plan.after)
            hotspots, grid_stats, counts = summarise_patches(
                patches, class_tmp, score_tmp, gbox, cell_m=plan.settings.layers.grid_cell_m,
                before_date=before_date, after_date=after_date,
            )  # fmt: skip
        class_cog = cogs.submit(
            _timed, clock, finish_cog, class_tmp, out_dir / "change_class.tif", description=CLASS_DESCRIPTION,
            categorical=True, predictor="YES",
        )  # fmt: skip
        with clock.stage(HOTSPOTS):
            hotspots = mark_history(hotspots, seen)
            grid = grid_stats.frame(hotspots)
            summary = None
            if districts is not None:
                hotspots = attribute_districts(hotspots, districts)
                grid = attribute_districts(grid, districts, key="cell_id")
                summary = district_summary(districts, hotspots, gbox.extent.geom, gbox.crs)
            report_map = cogs.submit(_timed, clock, map_png, out_dir / "change_class.tif", hotspots, summary)
            vectors = write_vector_layers(
                out_dir, run_crs=str(gbox.crs), run_extent=_bounds(gbox), hotspots=hotspots,
                priority_grid=grid, districts=summary, score_threshold=plan.settings.change.score_threshold,
                title=f"Vigía {plan.aoi_name} {after_date.isoformat()}",
            )  # fmt: skip
        outputs = {"change_score": score_cog.result(), "change_class": class_cog.result(), **vectors}
        with clock.stage(METADATA):
            metadata = run_metadata(plan, model, coverage, counts, len(hotspots))
            if districts is not None:
                metadata["districts"] = {
                    k: districts.attrs.get(k) for k in ("source", "skipped_without_geometry")
                }
            metadata["layers"] = sorted(p.name for p in outputs.values())
            outputs["run"] = write_json(metadata, out_dir / "run.json")
            outputs["report"] = write_report(out_dir, metadata, hotspots, summary, image=report_map.result())
    for leftover in scratch_dir.iterdir():
        leftover.unlink()
    scratch_dir.rmdir()
    return outputs


def _timed(clock: StageClock, write: Callable[..., Written], *args: Any, **options: Any) -> Written:
    """A step of writing a COG (or the report's map drawn from one), timed as part of the mosaic stage
    (it runs beside the hotspot stage)."""
    with clock.stage(MOSAIC):
        return write(*args, **options)


#: GDAL block cache while sieving (bytes): each strip is read once per pass, so a cache larger
#: than a strip of the score mosaic only holds memory.
SIEVE_CACHE_BYTES = 64 * 2**20


def sieve_and_summarise(
    class_path: Path,
    score_path: Path,
    gbox: GeoBox,
    *,
    min_pixels: int,
    cell_m: float,
    before_date: date | None,
    after_date: date | None,
    strip_rows: int = STRIP_ROWS,
) -> tuple[gpd.GeoDataFrame, GridStats, np.ndarray]:
    """Minimum mapping unit, hotspots, priority grid sums and class counts of the scratch mosaics,
    strip by strip: the class mosaic is sieved in place; memory holds a strip, whatever the area.

    Two passes over the class mosaic: the first finds the patches, joined across strips
    (`find_patches`), the second sieves each strip and accumulates the hotspots and grid cells
    (`summarise_patches`). Returns the hotspots frame, the grid sums (`GridStats.frame` makes the
    layer) and pixels per class 0-6."""
    patches = find_patches(class_path, min_pixels=min_pixels, strip_rows=strip_rows)
    return summarise_patches(
        patches, class_path, score_path, gbox, cell_m=cell_m, before_date=before_date, after_date=after_date
    )


def find_patches(class_path: Path, *, min_pixels: int, strip_rows: int = STRIP_ROWS) -> PatchSieve:
    """The first pass of `sieve_and_summarise`: the change patches of the class mosaic, read in
    strips of `strip_rows` rows and joined across them (the score mosaic is not read)."""
    sieve = PatchSieve(min_pixels)
    with rasterio.Env(GDAL_CACHEMAX=SIEVE_CACHE_BYTES), rasterio.open(class_path) as class_ds:
        for row0, row1 in strip_bounds(class_ds.height, strip_rows):
            sieve.add(class_ds.read(1, window=Window(0, row0, class_ds.width, row1 - row0)))
    sieve.finish()
    return sieve


def summarise_patches(
    patches: PatchSieve,
    class_path: Path,
    score_path: Path,
    gbox: GeoBox,
    *,
    cell_m: float,
    before_date: date | None,
    after_date: date | None,
) -> tuple[gpd.GeoDataFrame, GridStats, np.ndarray]:
    """The second pass of `sieve_and_summarise`, over the strips `patches` was fed: each strip of
    the class mosaic sieved in place, its hotspots, grid cells and class counts summed."""
    spots = HotspotStats(patches.hotspots)
    grid = GridStats(gbox, cell_m)
    counts = np.zeros(256, np.int64)
    with (
        rasterio.Env(GDAL_CACHEMAX=SIEVE_CACHE_BYTES),
        rasterio.open(class_path, "r+") as class_ds,
        rasterio.open(score_path) as score_ds,
    ):
        for index, (row0, row1) in enumerate(patches.strips):
            window = Window(0, row0, class_ds.width, row1 - row0)
            classes = class_ds.read(1, window=window)
            in_hotspot = patches.apply(index, classes)
            class_ds.write(classes[np.newaxis], [1], window=window)
            score = score_ds.read(1, window=window)
            spots.add(row0, in_hotspot, classes, score)
            grid.add(row0, classes, score)
            _count_classes(classes, counts)
    hotspots = spots.frame(gbox, before_date=before_date, after_date=after_date)
    return hotspots, grid, counts[:7]


@numba.njit(cache=True, nogil=True)
def _count_classes(classes: np.ndarray, counts: np.ndarray) -> None:  # pragma: no cover
    """Add the pixels of each value of a uint8 strip to `counts` (np.bincount would first copy the
    strip into machine-size integers)."""
    for value in classes.ravel():
        counts[value] += 1


def run_metadata(
    plan: RunPlan,
    model: PairModel,
    coverage: dict[str, Any],
    class_counts: Sequence[int] | np.ndarray,
    n_hotspots: int,
) -> dict[str, Any]:
    """What a reader needs to trust the layers: scenes, masking, co-registration, coverage."""
    settings = plan.settings.model_dump(mode="json", exclude={"sh_client_id", "sh_client_secret"})
    return {
        "vigia_version": __version__,
        "aoi": plan.aoi_name,
        "grid": plan.grid.model_dump(),
        "scenes": {
            period: [
                {
                    "id": s.id,
                    "date": s.acquired.isoformat(),
                    "level": s.level,
                    "source": s.source,
                    "cloud_cover": s.cloud_cover,
                    "cloud_mask": s.has_scl,
                    "boa_offset": s.boa_offset,
                }
                for s in scenes
            ]
            for period, scenes in (("before", plan.before), ("after", plan.after))
        },  # fmt: skip
        "cloud_mask_applied": plan.cloud_masked,
        "notes": plan.notes(),
        "coregistration": {
            "summary": model.shift.quality(_pixel_size_m(plan)),
            **model.shift.model_dump(mode="json"),
        },
        "normalization": model.normalization.model_dump(mode="json"),
        "coverage": coverage,
        "class_pixels": {str(i): int(c) for i, c in enumerate(class_counts)},
        "hotspots": n_hotspots,
        "settings": settings,
    }


def _bounds(gbox: GeoBox) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of the run grid."""
    b = gbox.boundingbox
    return (b.left, b.bottom, b.right, b.top)


def _pixel_size_m(plan: RunPlan) -> float | None:
    """Grid pixel size in metres, or None on a geographic grid."""
    from pyproj import CRS

    return abs(plan.grid.affine[0]) if CRS.from_user_input(plan.grid.crs).is_projected else None
