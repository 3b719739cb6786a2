from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from imagery import tilecache
from imagery.aoi import load_aoi
from imagery.change import DetectorParams
from imagery.config import load_settings
from imagery.execute import tile_to_file
from imagery.pipeline import fit_pair, plan_run
from imagery.sources.local import LocalSource
from imagery.sources.raster import DECODED_BLOCKS, OPEN_RASTERS
from imagery.tilecache import tile_key, touching
from imagery.tilestore import load_tile


def _crop_scene(scene: Path, out: Path, new_date: str, window_10m: Window) -> None:
    """A copy of `scene` cut to a small window (a new acquisition covering one corner)."""
    old_date = scene.name.split("_")[2][:8]
    out.mkdir(parents=True)
    for band in scene.iterdir():
        with rasterio.open(band) as src:
            scale = round(src.res[0] / 10)
            win = Window(window_10m.col_off // scale, window_10m.row_off // scale,
                         window_10m.width // scale, window_10m.height // scale)  # fmt: skip
            profile = src.profile | {"width": win.width, "height": win.height,
                                     "transform": src.window_transform(win), "driver": "GTiff"}  # fmt: skip
            profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
            with rasterio.open(out / band.name.replace(old_date, new_date), "w", **profile) as dst:
                dst.write(src.read(window=win))
                dst.update_tags(
                    **(src.tags() | {"ACQUISITION_DATE": f"{new_date[:4]}-{new_date[4:6]}-{new_date[6:]}"})
                )


@pytest.fixture(scope="module")
def plans(small_demo: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The small demo's plan and fitted model, and the plan after one corner scene arrives."""
    settings = load_settings(tile_size_px=128)
    aoi = load_aoi("lima_callao")
    scenes = tmp_path_factory.mktemp("scenes")
    for s in (small_demo / "scenes").iterdir():
        shutil.copytree(s, scenes / s.name)
    source = LocalSource(scenes)
    span = {"before": (date(2021, 1, 20), date(2021, 2, 18)), "after": (date(2022, 1, 20), date(2022, 2, 18))}
    plan = plan_run(aoi, source.search(aoi, *span["before"]), source.search(aoi, *span["after"]), settings)
    model = fit_pair(plan, source)
    assert DECODED_BLOCKS.held_bytes == 0 and len(OPEN_RASTERS) == 0  # the fit let go of its reads
    after_look = next(p for p in scenes.iterdir() if "20220217" in p.name)
    _crop_scene(after_look, scenes / after_look.name.replace("20220217", "20220210"), "20220210",
                Window(400, 400, 60, 60))  # fmt: skip
    after = source.search(aoi, *span["after"])
    assert len(after) == 3
    return plan, model, plan.model_copy(update={"after": after}), source


def test_a_new_scene_changes_the_keys_of_only_the_tiles_it_touches(plans) -> None:  # type: ignore[no-untyped-def]
    plan, model, plan_new, _ = plans
    tiles = plan.tiles()
    assert len(tiles) == 15
    assert [tile_key(plan, model, t) for t in tiles] == [tile_key(plan, model, t) for t in tiles]
    changed = {t.name for t in tiles if tile_key(plan, model, t) != tile_key(plan_new, model, t)}
    touched = {t.name for t in tiles if len(touching(plan_new.after, plan_new, t)) == 3}
    assert changed == touched
    assert 1 <= len(changed) <= 4


def test_settings_that_change_pixels_change_every_key_and_others_none(plans) -> None:  # type: ignore[no-untyped-def]
    plan, model, _, _ = plans
    tile = plan.tiles()[0]
    key = tile_key(plan, model, tile)
    elsewhere = plan.model_copy(
        update={"settings": plan.settings.model_copy(update={"workers": 7, "keep_runs": 3})}
    )
    assert tile_key(elsewhere, model, tile) == key
    stricter = plan.settings.model_copy(
        update={"change": plan.settings.change.model_copy(update={"score_threshold": 0.7})}
    )
    assert tile_key(plan.model_copy(update={"settings": stricter}), model, tile) != key


def test_new_detector_defaults_or_code_change_every_key(plans, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    plan, model, _, _ = plans
    tile = plan.tiles()[0]
    key = tile_key(plan, model, tile)
    changed = DetectorParams(structure_c=DetectorParams().structure_c * 2)
    monkeypatch.setattr(tilecache, "detector_params", lambda _: changed)
    assert tile_key(plan, model, tile) != key
    monkeypatch.undo()
    assert tile_key(plan, model, tile) == key
    monkeypatch.setattr(tilecache, "pixel_code_digest", lambda: "other code")
    assert tile_key(plan, model, tile) != key


def test_a_corrupt_cached_tile_is_detected_and_recomputed(plans, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan, model, _, source = plans
    path = tmp_path / "tile.npz"
    assert tile_to_file(plan, model, source, "r001c001", path) == (str(path), False)
    good = load_tile(path)
    assert good is not None
    assert tile_to_file(plan, model, source, "r001c001", path) == (str(path), True)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # bit rot inside the score array
    path.write_bytes(bytes(data))
    assert load_tile(path) is None
    assert tile_to_file(plan, model, source, "r001c001", path) == (str(path), False)
    again = load_tile(path)
    assert again is not None
    np.testing.assert_array_equal(again.classes, good.classes)
    np.testing.assert_array_equal(again.score, good.score)
