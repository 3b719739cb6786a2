"""Publish works on row strips of the mosaic (bounded memory); its minimum mapping unit, hotspots,
priority grid and class counts must equal the whole-grid result, also for patches that cross strip
boundaries (joined by the components' union across boundary rows)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from scipy import ndimage

from imagery.components import StripComponents, label, strip_bounds
from imagery.config import load_settings
from imagery.export import CLASS_NODATA, scratch_raster
from imagery.hotspots import PatchSieve, extract_hotspots, remove_small_patches
from imagery.pipeline import GridSpec, RunPlan, TileResult
from imagery.priority_grid import priority_grid
from imagery.publish import find_patches, mosaic, sieve_and_summarise
from imagery.tile_strips import TileStrips
from imagery.tilestore import save_tile, tile_path

EIGHT = np.ones((3, 3), bool)
MIN_PX = 20
STRIP = 7


def _classes_crossing_strips(seed: int = 0) -> np.ndarray:
    """Change patches of every class, many of them cut by 7-row strip boundaries."""
    rng = np.random.default_rng(seed)
    h, w = 120, 150
    field = ndimage.gaussian_filter(rng.standard_normal((h, w)), 2.0)
    kind = ndimage.median_filter(rng.integers(1, 7, (h, w)), 5).astype(np.uint8)
    classes = np.where(field > np.quantile(field, 0.7), kind, 0).astype(np.uint8)
    classes[rng.random((h, w)) < 0.02] = 2  # specks, below the minimum mapping unit
    classes[rng.random((h, w)) < 0.01] = CLASS_NODATA
    classes[:, 140:] = 0
    classes[5:100, 142] = 1  # a thin line through 14 strips: every piece 2 px or 7 px, the whole 95
    for r in range(6, 30):  # a diagonal staircase, joined only corner to corner across boundaries
        classes[r, 144 + (r % 2)] = 3
    classes[110:113, 140:150] = 0
    classes[110, 141:146] = 2  # 5 px ...
    classes[111:113, 146] = 2  # ... joined by a diagonal to 2 px in the next strip: 7 px, sieved
    return classes


def _gbox(shape: tuple[int, int]) -> GeoBox:
    h, w = shape
    return GeoBox.from_bbox(
        (262_000, 8_700_000 - h * 10, 262_000 + w * 10, 8_700_000), "EPSG:32718", resolution=10
    )


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("strip_rows", [1, 3, STRIP])
def test_strip_components_equal_whole_mask_labels(connectivity: int, strip_rows: int) -> None:
    mask = np.isin(_classes_crossing_strips(), (1, 2, 3))
    structure = EIGHT if connectivity == 8 else None
    expected, n = ndimage.label(mask, structure=structure)
    parts = StripComponents(connectivity)
    strips = strip_bounds(mask.shape[0], strip_rows)
    for row0, row1 in strips:
        parts.add(mask[row0:row1])
    assert parts.finish() == n
    got = np.concatenate([parts.labels(i, mask[r0:r1]) for i, (r0, r1) in enumerate(strips)])
    np.testing.assert_array_equal(got, expected)  # same ids, in the same (raster) order
    np.testing.assert_array_equal(parts.sizes[1:], np.bincount(expected.ravel())[1:])


def _reference_sieve(classes: np.ndarray, min_px: int) -> np.ndarray:
    """The minimum mapping unit on the whole grid, written independently: 8-connected patches of
    each group smaller than `min_px` set to 0."""
    out = classes.copy()
    for group in ((1, 2, 3), (4, 5, 6)):
        member = np.isin(classes, group)
        labels, _ = ndimage.label(member, structure=EIGHT)
        out[member & (np.bincount(labels.ravel())[labels] < min_px)] = 0
    return out


def test_strip_sieve_and_hotspots_equal_whole_grid(tmp_path: Path) -> None:
    classes = _classes_crossing_strips()
    score = np.random.default_rng(1).random(classes.shape).astype(np.float32)
    score[5, 5] = np.nan
    gbox = _gbox(classes.shape)
    class_path, score_path = tmp_path / "class.tif", tmp_path / "score.tif"
    with scratch_raster(class_path, gbox, "uint8", CLASS_NODATA) as ds:
        ds.write(classes, 1)
    with scratch_raster(score_path, gbox, "float32", float("nan")) as ds:
        ds.write(score, 1)

    spots, grid_stats, counts = sieve_and_summarise(
        class_path, score_path, gbox, min_pixels=MIN_PX, cell_m=500, before_date=date(2025, 1, 1),
        after_date=date(2026, 1, 1), strip_rows=STRIP,
    )  # fmt: skip

    sieved = _reference_sieve(classes, MIN_PX)
    assert (sieved[5:100, 142] == 1).all()  # kept: 95 px, although no strip holds 20 of them
    assert (sieved[6:30, 144:146] == 3).sum() == 24  # kept: 24 px only with its corner joins
    assert (sieved[110:113, 141:147] == 0).all()
    with rasterio.open(class_path) as ds:
        np.testing.assert_array_equal(ds.read(1), sieved)
    np.testing.assert_array_equal(counts, np.bincount(sieved[sieved != CLASS_NODATA], minlength=7)[:7])

    whole = classes.copy()
    remove_small_patches(whole, MIN_PX)
    np.testing.assert_array_equal(whole, sieved)
    expected = extract_hotspots(whole, score, gbox, before_date=date(2025, 1, 1), after_date=date(2026, 1, 1))
    _, n = ndimage.label(np.isin(sieved, (1, 2, 3)), structure=EIGHT)
    assert len(spots) == len(expected) == n
    attributes = [c for c in spots.columns if c != "geometry"]
    assert spots[attributes].equals(expected[attributes])
    # One outline per hotspot, joined across strips: the same polygon as on the whole grid, whose
    # area is the hotspot's pixel area.
    assert [g.wkt for g in spots.geometry] == [g.wkt for g in expected.geometry]
    np.testing.assert_allclose(spots.geometry.area, spots["area_m2"])
    line = spots[spots["area_m2"] == 95 * 100]
    assert len(line) == 1 and line.geometry.iloc[0].geom_type == "Polygon"

    grid = grid_stats.frame(spots)
    assert grid.drop(columns="geometry").equals(
        priority_grid(whole, score, gbox, expected).drop(columns="geometry")
    )


def test_in_memory_strips_equal_whole_grid() -> None:
    classes = _classes_crossing_strips(seed=3)
    score = np.random.default_rng(4).random(classes.shape).astype(np.float32)
    gbox = _gbox(classes.shape)
    whole, strips = classes.copy(), classes.copy()
    remove_small_patches(whole, MIN_PX)
    remove_small_patches(strips, MIN_PX, strip_rows=STRIP)
    np.testing.assert_array_equal(strips, whole)
    np.testing.assert_array_equal(whole, _reference_sieve(classes, MIN_PX))
    a = extract_hotspots(whole, score, gbox, before_date=None, after_date=None)
    b = extract_hotspots(whole, score, gbox, before_date=None, after_date=None, strip_rows=STRIP)
    assert a.to_wkt().equals(b.to_wkt())
    ga = priority_grid(whole, score, gbox, a)
    gb = priority_grid(whole, score, gbox, b, strip_rows=STRIP)
    assert ga.to_wkt().equals(gb.to_wkt())


@pytest.mark.parametrize("connectivity", [4, 8])
def test_label_numbers_components_as_scipy_does(connectivity: int) -> None:
    # Strips are labelled by runs joined with union-find; numbers and sizes must be scipy's.
    rng = np.random.default_rng(connectivity)
    structure = EIGHT if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    for _ in range(100):
        mask = rng.random(rng.integers(0, 40, 2)) < rng.uniform(0.1, 0.9)
        expected, n = ndimage.label(mask, structure=structure)
        labels, sizes = label(mask, connectivity)
        assert labels.dtype == np.int32 and np.array_equal(labels, expected)
        np.testing.assert_array_equal(sizes[1:], np.bincount(expected.ravel(), minlength=n + 1)[1:])
        assert sizes.size == n + 1 and sizes[0] == 0


def _tiled_plan(gbox: GeoBox, anchor: tuple[int, int]) -> RunPlan:
    """A run plan over `gbox` cut into 128-px tiles whose edges fall on `anchor` (no scenes: only
    the grid and tiles are read by `mosaic`)."""
    return RunPlan(
        aoi_name="strips", aoi_wkt=gbox.extent.geom.wkt, grid=GridSpec.from_geobox(gbox), before=[],
        after=[], settings=load_settings(tile_size_px=128), tile_anchor=anchor,
    )  # fmt: skip


@pytest.mark.parametrize("strip_rows", [STRIP, 64, 512])
def test_patches_found_while_mosaicking_equal_those_of_the_written_mosaic(
    tmp_path: Path, strip_rows: int
) -> None:
    classes = np.tile(_classes_crossing_strips(seed=5), (3, 2))  # 360 x 300: tiles of 128 px
    score = np.random.default_rng(6).random(classes.shape).astype(np.float32)
    gbox = _gbox(classes.shape)
    plan = _tiled_plan(gbox, anchor=(50, 60))  # tile rows 0-50, 50-178, ...: not on strip edges
    tiles = plan.tiles()
    assert len({t.row0 for t in tiles}) == 4 and len({t.col0 for t in tiles}) == 3
    for t in tiles:
        window = np.s_[t.row0 : t.row0 + t.height, t.col0 : t.col0 + t.width]
        looks = np.full((t.height, t.width), 3, np.uint8)
        save_tile(TileResult(score[window], classes[window], looks, looks), tile_path(tmp_path, t.name))
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    during = PatchSieve(MIN_PX)
    _, class_path, coverage, _ = mosaic(plan, tmp_path, scratch, patches=during, strip_rows=strip_rows)
    after = find_patches(class_path, min_pixels=MIN_PX, strip_rows=strip_rows)

    assert coverage["valid_fraction"] == round(float((classes != CLASS_NODATA).mean()), 4)
    assert during.strips == after.strips == strip_bounds(classes.shape[0], strip_rows)
    assert during.hotspots == after.hotspots > 0
    sieved = classes.copy()
    remove_small_patches(sieved, MIN_PX)
    for index, (row0, row1) in enumerate(during.strips):
        a, b = classes[row0:row1].copy(), classes[row0:row1].copy()
        np.testing.assert_array_equal(during.apply(index, a), after.apply(index, b))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, sieved[row0:row1])


def test_a_tile_missing_while_mosaicking_stops_it_with_one_line(tmp_path: Path) -> None:
    classes = np.tile(_classes_crossing_strips(seed=8), (3, 2))
    plan = _tiled_plan(_gbox(classes.shape), anchor=(50, 60))
    tiles = plan.tiles()
    looks = np.ones(classes.shape, np.uint8)
    for t in tiles:
        window = np.s_[t.row0 : t.row0 + t.height, t.col0 : t.col0 + t.width]
        score = np.zeros((t.height, t.width), np.float32)
        save_tile(
            TileResult(score, classes[window], looks[window], looks[window]), tile_path(tmp_path, t.name)
        )
    tile_path(tmp_path, tiles[7].name).unlink()  # read in the reader thread, with strips queued
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(RuntimeError, match=f"^tile {tiles[7].name} has no result in {tmp_path}$"):
        mosaic(plan, tmp_path, scratch, patches=PatchSieve(MIN_PX), strip_rows=STRIP)


def test_tile_strips_hand_out_each_strip_once_its_tiles_are_given() -> None:
    classes = _classes_crossing_strips(seed=7)
    strips = TileStrips(classes.shape[0], classes.shape[1], STRIP, np.uint8, CLASS_NODATA)
    got: list[np.ndarray] = []
    for row0, row1 in ((0, 20), (20, 90)):  # two rows of tiles; the first leaves column 100+ empty
        for col0, col1 in ((0, 100), (100, 150)):
            if (row0, col0) != (0, 100):
                got += strips.add(row0, col0, classes[row0:row1, col0:col1])
        # the strips ending above the row of tiles just started, not the one it shares (14-21)
        assert sum(len(s) for s in got) == (0 if row0 == 0 else 14)
    got += strips.finish()
    assert [len(s) for s in got] == [r1 - r0 for r0, r1 in strip_bounds(classes.shape[0], STRIP)]
    expected = classes.copy()
    expected[:20, 100:] = CLASS_NODATA
    expected[90:] = CLASS_NODATA
    np.testing.assert_array_equal(np.concatenate(got), expected)
    with pytest.raises(ValueError, match="row order"):
        strips.add(0, 0, classes[:5, :5])
