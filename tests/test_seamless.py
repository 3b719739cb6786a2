"""Seamlessness: a run cut into small tiles publishes exactly what the same run computed on the
whole scene as one tile publishes, so tile edges never create, cut or move hotspots."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from imagery import demo
from imagery.config import load_settings
from imagery.execute import tile_to_file
from imagery.export import SCORE_MAX_ERROR
from imagery.pipeline import (
    PairModel,
    RunPlan,
    align_in_place,
    fit_pair,
    plan_run,
    read_composite,
    read_composite_by_strips,
)
from imagery.publish import publish
from imagery.sources.local import LocalSource, open_scene
from imagery.tilestore import tile_path

SMALL_TILE_PX = 128


def _run(plan: RunPlan, model: PairModel, source: LocalSource, out: Path) -> Path:
    """Every tile through the function Dask runs, then publish."""
    tile_dir = out / "tiles"
    for tile in plan.tiles():
        tile_to_file(plan, model, source, tile.name, tile_path(tile_dir, tile.name))
    publish(plan, model, tile_dir, out / "run")
    return out / "run"


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.mark.slow
def test_tiled_run_equals_whole_scene_run(small_demo: Path, tmp_path: Path) -> None:
    source = LocalSource(small_demo / "scenes")
    opened = [open_scene(p) for p in sorted(source.root.iterdir())]
    before = [s for s in opened if s.acquired.year == 2021]
    after = [s for s in opened if s.acquired.year == 2022]
    tiled = plan_run(None, before, after, load_settings(tile_size_px=SMALL_TILE_PX))
    assert len(tiled.tiles()) == 16
    whole = tiled.model_copy(update={"settings": load_settings(tile_size_px=demo.SIZE_PX)})
    assert len(whole.tiles()) == 1
    model = fit_pair(tiled, source)  # one fitted model, applied by every tile (and by the whole scene)

    tiled_run = _run(tiled, model, source, tmp_path / "tiled")
    whole_run = _run(whole, model, source, tmp_path / "whole")

    score_t, score_w = _read(tiled_run / "change_score.tif"), _read(whole_run / "change_score.tif")
    assert np.isfinite(score_w).mean() > 0.5
    # Equal up to float32 rounding (window sums can differ in the last bit with the tile start),
    # which can move a rare value across a step of the stored score's quantisation (LERC, to
    # SCORE_MAX_ERROR). A seam would differ along whole tile edges. Classes are exact.
    off = np.abs(np.nan_to_num(score_t) - np.nan_to_num(score_w))
    assert off.max() <= 2 * SCORE_MAX_ERROR and np.count_nonzero(off > 1e-6) <= 0.0001 * off.size
    assert np.array_equal(np.isnan(score_t), np.isnan(score_w))
    class_t, class_w = _read(tiled_run / "change_class.tif"), _read(whole_run / "change_class.tif")
    assert np.isin([1, 2, 3], class_w).all(), "the scene should hold man-made change"
    np.testing.assert_array_equal(class_t, class_w)

    spots_t = gpd.read_file(tiled_run / "hotspots.geojson")
    spots_w = gpd.read_file(whole_run / "hotspots.geojson")
    assert len(spots_w) > 0
    # Hotspots crossing a tile edge (128 px) exist, and they are whole in the tiled run too.
    edges_m = [demo.ORIGIN[0] + k * SMALL_TILE_PX * demo.RESOLUTION for k in range(1, 4)]
    utm = spots_w.to_crs("EPSG:32718")
    crossing = [any(b[0] < x < b[2] for x in edges_m) for b in utm.geometry.bounds.to_numpy()]
    assert any(crossing)
    cols = ["id", "change_type", "area_m2", "score_mean", "score_max", "priority"]
    assert (
        spots_t[cols]
        .sort_values("id")
        .reset_index(drop=True)
        .equals(spots_w[cols].sort_values("id").reset_index(drop=True))
    )
    assert (
        spots_t.sort_values("id")
        .geometry.reset_index(drop=True)
        .geom_equals(spots_w.sort_values("id").geometry.reset_index(drop=True))
        .all()
    )


def test_fit_window_read_by_strips_equals_one_read(small_demo: Path) -> None:
    """The pair fit composites its window a strip of rows at a time: the same looks and values as one read."""
    source = LocalSource(small_demo / "scenes")
    opened = [open_scene(p) for p in sorted(source.root.iterdir())]
    plan = plan_run(
        None,
        [s for s in opened if s.acquired.year == 2021],
        [s for s in opened if s.acquired.year == 2022],
        load_settings(),
    )
    gbox = plan.grid.geobox()
    for scenes in (plan.before, plan.after):
        whole = read_composite(source, scenes, gbox, plan.settings)
        strips = read_composite_by_strips(source, scenes, gbox, plan.settings, rows=100)
        assert (whole.valid_looks < len(scenes)).any(), "clouds should be masked somewhere"
        np.testing.assert_array_equal(strips.valid_looks, whole.valid_looks)
        np.testing.assert_array_equal(strips.bands, whole.bands)


def test_fit_window_aligned_in_place_by_strips_equals_one_shift(small_demo: Path) -> None:
    """The pair fit resamples its after window in place, strip by strip: the same values as one resample."""
    source = LocalSource(small_demo / "scenes")
    opened = [open_scene(p) for p in sorted(source.root.iterdir())]
    before = [s for s in opened if s.acquired.year == 2021]
    plan = plan_run(
        None, before, [s for s in opened if s.acquired.year == 2022], load_settings(tile_size_px=256)
    )
    shift = fit_pair(plan, source).shift
    assert abs(shift.global_model.dx_px) > 0.2, "the demo's after looks are shifted"
    window, origin = plan.grid.geobox()[5:500, 7:400], (5, 7)
    bands = read_composite(source, plan.after, window, plan.settings).bands
    whole = shift.apply(bands, origin)
    align_in_place(shift, bands, origin, plan.halo, rows=64)
    assert np.isnan(whole).any() and np.isfinite(whole).mean() > 0.5
    np.testing.assert_array_equal(bands, whole)
