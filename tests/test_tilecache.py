from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from shapely.geometry import box

from imagery import tilecache
from imagery.aoi import load_aoi
from imagery.change import DetectorParams
from imagery.config import load_settings
from imagery.execute import tile_to_file
from imagery.pipeline import fit_pair, plan_run
from imagery.sources.local import LocalSource
from imagery.sources.raster import DECODED_BLOCKS, OPEN_RASTERS
from imagery.tilecache import tile_keys, touching
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
    return plan, model, plan.model_copy(update={"after": after}), source, next(scenes.glob("*20220210*"))


def test_a_new_scene_changes_the_keys_of_only_the_tiles_it_touches(plans) -> None:  # type: ignore[no-untyped-def]
    plan, model, plan_new, _, new_scene = plans
    tiles = plan.tiles()
    assert len(tiles) == 15
    keys, keys_new = tile_keys(plan, model), tile_keys(plan_new, model)
    assert keys == tile_keys(plan, model)
    assert list(keys) == [t.name for t in tiles]
    changed = {name for name in keys if keys[name] != keys_new[name]}
    touched = {
        t.name
        for t, scenes in zip(tiles, touching(plan_new.after, plan_new, tiles), strict=True)
        if len(scenes) == 3
    }
    assert changed == touched
    assert 1 <= len(changed) <= 4
    with rasterio.open(next(new_scene.glob("*B02*"))) as src:  # the new scene's pixels, on the run grid's CRS
        assert src.crs == plan.grid.geobox().crs
        covered = box(*src.bounds)
    gbox = plan.grid.geobox()
    assert touched == {t.name for t in tiles if t.padded(gbox, plan.halo)[0].extent.geom.intersects(covered)}


def test_a_new_pair_model_changes_every_key(plans) -> None:  # type: ignore[no-untyped-def]
    plan, model, *_ = plans
    norm = model.normalization.model_copy(update={"offset": [v + 1e-6 for v in model.normalization.offset]})
    assert _all_differ(
        tile_keys(plan, model.model_copy(update={"normalization": norm})), tile_keys(plan, model)
    )


def test_settings_that_change_pixels_change_every_key_and_others_none(plans) -> None:  # type: ignore[no-untyped-def]
    plan, model, *_ = plans
    key = tile_keys(plan, model)
    elsewhere = plan.model_copy(
        update={"settings": plan.settings.model_copy(update={"workers": 7, "keep_runs": 3})}
    )
    assert tile_keys(elsewhere, model) == key
    stricter = plan.settings.model_copy(
        update={"change": plan.settings.change.model_copy(update={"score_threshold": 0.7})}
    )
    stricter_keys = tile_keys(plan.model_copy(update={"settings": stricter}), model)
    assert _all_differ(stricter_keys, key)


def test_new_detector_defaults_or_code_change_every_key(plans, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    plan, model, *_ = plans
    key = tile_keys(plan, model)
    changed = DetectorParams(structure_c=DetectorParams().structure_c * 2)
    monkeypatch.setattr(tilecache, "detector_params", lambda _: changed)
    assert _all_differ(tile_keys(plan, model), key)
    monkeypatch.undo()
    assert tile_keys(plan, model) == key
    monkeypatch.setattr(tilecache, "pixel_code_digest", lambda: "other code")
    assert _all_differ(tile_keys(plan, model), key)


def test_a_corrupt_cached_tile_is_detected_and_recomputed(plans, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan, model, _, source, _ = plans
    path = tmp_path / "tile.tile"
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


def _all_differ(keys: dict[str, str], others: dict[str, str]) -> bool:
    """True when the same tiles have keys and every tile's key differs."""
    return keys.keys() == others.keys() and all(keys[name] != others[name] for name in keys)
