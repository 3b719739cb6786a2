"""Seamlessness: a run cut into small tiles publishes exactly what the same run computed on the
whole scene as one tile publishes, so tile edges never create, cut or move hotspots."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from imagery import coregister, demo
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
    tile_tie_points,
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


def _demo_plan(source: LocalSource) -> RunPlan:
    """The demo's run plan on its native grid: 2021 looks before, 2022 after, default settings."""
    opened = [open_scene(p) for p in sorted(source.root.iterdir())]
    before = [s for s in opened if s.acquired.year == 2021]
    return plan_run(None, before, [s for s in opened if s.acquired.year == 2022], load_settings())


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

    # Tiles on the inputs' 512 px block grid (grid.tile_anchor): edges 17 px before a block edge.
    anchored = plan_run(None, before, after, load_settings(tile_size_px=512))
    assert anchored.tile_anchor == (495, 495) and len(anchored.tiles()) == 4

    # And an arbitrary anchor: tiles of 256 px with edges at rows 100, 356 and columns 60, 316.
    shifted = tiled.model_copy(update={"settings": load_settings(tile_size_px=256), "tile_anchor": (100, 60)})
    assert len(shifted.tiles()) == 9

    whole_run = _run(whole, model, source, tmp_path / "whole")
    for name, plan in [("tiled", tiled), ("anchored", anchored), ("shifted", shifted)]:
        _assert_same_layers(_run(plan, model, source, tmp_path / name), whole_run)
    bounds = gpd.read_file(whole_run / "hotspots.geojson").to_crs("EPSG:32718").geometry.bounds.to_numpy()
    for cuts_x, cuts_y in [((128, 256, 384), (128, 256, 384)), ((60, 316), (100, 356))]:
        xs = [demo.ORIGIN[0] + k * demo.RESOLUTION for k in cuts_x]
        ys = [demo.ORIGIN[1] - k * demo.RESOLUTION for k in cuts_y]
        crossing = [any(b[0] < x < b[2] for x in xs) or any(b[1] < y < b[3] for y in ys) for b in bounds]
        assert any(crossing), f"no hotspot crosses a tile edge at columns {cuts_x} or rows {cuts_y}"


def _assert_same_layers(tiled_run: Path, whole_run: Path) -> None:
    """The layers of a tiled run equal the whole-scene run's."""
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
    # Hotspots are whole in the tiled run too (some cross a tile edge: see the caller).
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
    plan = _demo_plan(source)
    gbox = plan.grid.geobox()
    for scenes in (plan.before, plan.after):
        whole = read_composite(source, scenes, gbox, plan.settings)
        strips = read_composite_by_strips(source, scenes, gbox, plan.settings, rows=100, phase=37)
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


def test_tile_tie_points_read_only_their_windows_yet_match_the_whole_tile(small_demo: Path) -> None:
    """The tie-point pass composites only the part of a tile its windows need (plus the mask
    dilation): the same tie points as matching the composites of the whole padded tile."""
    source = LocalSource(small_demo / "scenes")
    plan = _demo_plan(source)
    (tile,) = plan.tiles()
    padded, origin, _ = tile.padded(plan.grid.geobox(), plan.halo)
    before, after = (
        read_composite(source, scenes, padded, plan.settings, bands=("B08",))
        for scenes in (plan.before, plan.after)
    )
    assert (before.valid_looks < len(plan.before)).any(), "clouds should be masked somewhere"
    whole = coregister.match_windows(
        before.bands[0], after.bands[0], plan.settings.coregistration, origin=origin
    )
    got = tile_tie_points(plan, source, tile).points
    assert whole.reliable.sum() >= 3
    for name in ("rows", "cols", "dx", "dy", "peak", "psr", "reliable"):
        np.testing.assert_array_equal(getattr(got, name), getattr(whole, name))
