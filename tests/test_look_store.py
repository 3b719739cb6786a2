"""The looks the pair fit keeps for the tile pass: taken intact, never stale, and the tiles made
from them equal the tiles read from the files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from odc.geo.geobox import GeoBox

from imagery.config import load_settings
from imagery.coregister import WindowGrid
from imagery.execute import run_tiles
from imagery.look_store import KeptLooks, LookStore, _Budget
from imagery.pipeline import RunPlan, fit_pair, plan_run, run_tile
from imagery.sources.base import Scene
from imagery.sources.local import LocalSource, open_scene


class CountingSource(LocalSource):
    """A local source that records every band it is asked for, and the windows' shapes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.bands: list[str] = []
        self.shapes: list[tuple[int, int]] = []

    def read(
        self, scene: Scene, bands: Sequence[str], gbox: GeoBox, out: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        self.bands += bands
        self.shapes += [(gbox.shape.y, gbox.shape.x)] * len(bands)
        return super().read(scene, bands, gbox, out=out)

    def read_dn(self, scene: Scene, bands: Sequence[str], gbox: GeoBox, out: np.ndarray) -> None:
        self.bands += bands
        self.shapes += [(gbox.shape.y, gbox.shape.x)] * len(bands)
        super().read_dn(scene, bands, gbox, out)


def _plan(source: LocalSource, tile_px: int = 256, dilate_px: int = 3) -> RunPlan:
    opened = [open_scene(p) for p in sorted(source.root.iterdir())]
    before = [s for s in opened if s.acquired.year == 2021]
    after = [s for s in opened if s.acquired.year == 2022]
    settings = load_settings(tile_size_px=tile_px, mask={"dilate_px": dilate_px})
    return plan_run(None, before, after, settings)


def test_a_record_is_taken_once_exactly_as_put(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    clear = rng.random((37, 53)) > 0.4  # not a whole number of bytes of bits
    nir = rng.integers(0, 2**16, (37, 53), dtype=np.uint16)
    paths = [tmp_path / "a.look", tmp_path / "b.look", tmp_path / "c.look"]
    budget = _Budget(2**20)
    KeptLooks(paths, budget).put(0, clear, nir)
    KeptLooks(paths, budget).put(1, None, nir)
    KeptLooks(paths, None).put(2, clear, nir)  # the tile pass writes nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.look", "b.look"]

    reader = KeptLooks(paths, None)
    got_clear, got_nir = np.zeros_like(clear), np.zeros_like(nir)
    assert reader.take(0, got_clear, got_nir) is True
    np.testing.assert_array_equal(got_clear, clear)
    np.testing.assert_array_equal(got_nir, nir)
    assert reader.take(1, got_clear, got_nir) is False  # skipped on this window
    assert reader.take(2, got_clear, got_nir) is None  # never kept: read the scene
    assert list(tmp_path.iterdir()) == []
    assert reader.take(0, got_clear, got_nir) is None  # taken once


def test_a_record_of_another_shape_is_not_taken(tmp_path: Path) -> None:
    paths = [tmp_path / "a.look"]
    KeptLooks(paths, _Budget(2**20)).put(0, np.ones((8, 8), bool), np.ones((8, 8), np.uint16))
    assert KeptLooks(paths, None).take(0, np.zeros((8, 9), bool), np.zeros((8, 9), np.uint16)) is None


def test_records_stop_at_the_budget(tmp_path: Path) -> None:
    one = 1 + 8 + 64 * 2  # a clear 8 x 8 look: its flag, mask bits and NIR
    budget = _Budget(2 * one)
    paths = [tmp_path / f"{i}.look" for i in range(3)]
    for i in range(3):
        KeptLooks(paths, budget).put(i, np.ones((8, 8), bool), np.ones((8, 8), np.uint16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.look", "1.look"]
    assert budget.left == 0


def test_a_scratch_that_cannot_be_written_keeps_nothing_and_fails_nothing(tmp_path: Path) -> None:
    blocked = tmp_path / "looks"
    blocked.write_text("a file where the store's folder should be")
    budget = _Budget(2**20)
    paths = [blocked / "a.look", blocked / "b.look"]
    for i in range(2):
        KeptLooks(paths, budget).put(i, np.ones((8, 8), bool), np.ones((8, 8), np.uint16))
    assert budget.left == 0, "no more writes are tried"
    assert KeptLooks(paths, None).take(0, np.zeros((8, 8), bool), np.zeros((8, 8), np.uint16)) is None


def test_records_are_named_by_what_shaped_them(small_demo: Path, tmp_path: Path) -> None:
    source = LocalSource(small_demo / "scenes")
    plan = _plan(source)
    tile, other = plan.tiles()[:2]
    store = LookStore(tmp_path, plan)
    names = [p.name for p in store.looks(tile, "before", writing=False).paths]
    assert names == [
        p.name for p in LookStore(tmp_path, _plan(source)).looks(tile, "before", writing=False).paths
    ]
    assert len(set(names)) == len(plan.before)
    smaller = _plan(source, tile_px=128)
    for changed in (
        LookStore(tmp_path, _plan(source, dilate_px=2)).looks(tile, "before", writing=False),
        LookStore(tmp_path, smaller).looks(smaller.tiles()[0], "before", writing=False),
        store.looks(other, "before", writing=False),
        store.looks(tile, "after", writing=False),
    ):
        assert not {p.name for p in changed.paths} & set(names)


@pytest.mark.slow
def test_tiles_from_kept_looks_equal_tiles_read_from_the_files(small_demo: Path, tmp_path: Path) -> None:
    source = CountingSource(small_demo / "scenes")
    plan = _plan(source)
    model = fit_pair(plan, source)
    store = LookStore(tmp_path / "looks", plan)
    kept_model = fit_pair(plan, source, looks=store)
    assert kept_model.model_dump_json() == model.model_dump_json()  # the same tie points, the same fit
    tiles = plan.tiles()
    assert len(list(store.folder.iterdir())) == len(tiles) * (len(plan.before) + len(plan.after))
    for tile in tiles:
        source.bands.clear()
        kept = run_tile(plan, model, source, tile, store)
        assert "SCL" not in source.bands and "B08" not in source.bands, "the kept looks were read again"
        assert source.bands, "the other bands are read"
        read = run_tile(plan, model, source, tile)
        assert "SCL" in source.bands and "B08" in source.bands
        for name in ("score", "classes", "looks_before", "looks_after"):
            np.testing.assert_array_equal(getattr(kept, name), getattr(read, name))
    assert list(store.folder.iterdir()) == [], "every record is taken once"


@pytest.mark.slow
def test_tiles_beyond_the_budget_are_read_from_the_files(small_demo: Path, tmp_path: Path) -> None:
    source = CountingSource(small_demo / "scenes")
    plan = _plan(source, tile_px=384)  # padded tiles larger than the tie points' windows need
    model = fit_pair(plan, source)
    tiles = plan.tiles()
    padded = tiles[0].padded(plan.grid.geobox(), plan.halo)[0]
    record = 1 + (padded.shape.y * padded.shape.x + 7) // 8 + padded.shape.y * padded.shape.x * 2
    budget = int(
        0.5 * (len(plan.before) + len(plan.after)) * record
    )  # half the first tile: the narrow second one fits
    store = LookStore(tmp_path / "looks", plan, budget_bytes=budget)
    source.bands.clear()
    source.shapes.clear()
    fit_pair(plan, source, looks=store)
    assert 0 < sum(p.stat().st_size for p in store.folder.iterdir()) <= budget
    # the tie points of the tiles beyond the budget read only what their windows need
    nir_windows = {shape for band, shape in zip(source.bands, source.shapes, strict=True) if band == "B08"}
    padded = [t.padded(plan.grid.geobox(), plan.halo)[0].shape for t in tiles]
    whole = {(p.y, p.x) for p in padded}
    parts = set()
    for p in padded:
        extent = WindowGrid.on((p.y, p.x), plan.settings.coregistration).extent(3, (p.y, p.x))
        if extent is not None and (extent[1] - extent[0], extent[3] - extent[2]) not in whole:
            parts.add((extent[1] - extent[0], extent[3] - extent[2]))
    assert nir_windows & whole and nir_windows & parts
    nir_reads = 0
    for tile in tiles:
        source.bands.clear()
        kept = run_tile(plan, model, source, tile, store)
        nir_reads += source.bands.count("B08")
        np.testing.assert_array_equal(kept.score, run_tile(plan, model, source, tile).score)
    assert 0 < nir_reads < len(tiles) * (len(plan.before) + len(plan.after)), "some looks from records"


@pytest.mark.slow
def test_records_of_another_plan_are_never_taken(small_demo: Path, tmp_path: Path) -> None:
    source = CountingSource(small_demo / "scenes")
    wider = _plan(source, dilate_px=6)  # another cloud mask: its records must not serve this plan
    fit_pair(wider, source, looks=LookStore(tmp_path, wider))
    plan = _plan(source)
    model = fit_pair(plan, source)
    tile = plan.tiles()[0]
    source.bands.clear()
    got = run_tile(plan, model, source, tile, LookStore(tmp_path, plan))
    assert "SCL" in source.bands
    np.testing.assert_array_equal(got.classes, run_tile(plan, model, source, tile).classes)


@pytest.mark.slow
def test_run_tiles_empties_the_store(small_demo: Path, tmp_path: Path) -> None:
    source = LocalSource(small_demo / "scenes")
    plan = _plan(source)
    store = LookStore(tmp_path / "looks", plan)
    model = fit_pair(plan, source, looks=store)
    assert any(store.folder.iterdir())
    done = run_tiles(plan, model, source, tmp_path / "tiles", workers=1, looks=store)
    assert len(done) == len(plan.tiles())
    assert not store.folder.exists()
