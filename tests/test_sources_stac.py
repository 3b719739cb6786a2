"""The `stac` source against a STAC API emulator and a Range-capable file server on 127.0.0.1:
pystac-client and GDAL run unmodified (only URLs differ from Earth Search). Covers item mapping,
paging and filters, a detect run equal to the local source's on the same COGs, the cache (a rerun
makes no request), transient faults retried, permanent faults ending in one line with nothing cached,
and the `vigia search` / `vigia fetch` commands."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import rasterio
import requests
from shapely.geometry import box
from typer.testing import CliRunner

from flows.params import NightlyParams
from imagery import demo
from imagery.aoi import from_geometry, load_aoi
from imagery.cli import app
from imagery.config import load_settings
from imagery.errors import SourceError
from imagery.execute import detect
from imagery.grid import run_geobox
from imagery.pipeline import plan_run, read_composite
from imagery.sources.base import Scene
from imagery.sources.cache import FetchCache
from imagery.sources.local import LocalSource, open_scene, read_scene_bands
from imagery.sources.raster import DECODED_BLOCKS, OPEN_RASTERS
from imagery.sources.retry import RetryPolicy, SourceAuthError
from imagery.sources.stac import StacSource, band_of_asset, scene_from_item
from tests.emulators.faults import FaultKind
from tests.emulators.file_server import FileServer
from tests.emulators.http import running
from tests.emulators.stac_api import COLLECTION, StacApi, scene_item
from tests.scenes import textured_reflectance, write_scene

#: Quick retries so fault tests take seconds: per-request timeout 1 s (GDAL's HTTP timeout is whole s).
FAST = RetryPolicy(
    max_attempts=4, base_delay_s=0.05, max_delay_s=3.0, total_timeout_s=30, request_timeout_s=1
)
PERIODS = NightlyParams(run_date=demo.RUN_DATE).periods()
runner = CliRunner()


@dataclass
class Catalogue:
    """The emulators serving the small demo's scenes."""

    files: FileServer
    api: StacApi
    scenes: Path

    def source(self, cache: Path, policy: RetryPolicy = FAST, page_size: int = 100) -> StacSource:
        return StacSource(self.api.root, COLLECTION, FetchCache(cache), policy, page_size)

    def requests(self) -> int:
        return self.files.faults.count() + self.api.faults.count()


@pytest.fixture(scope="module")
def catalogue(small_demo: Path) -> Iterator[Catalogue]:
    scenes = small_demo / "scenes"
    with running(FileServer(scenes)) as files:
        items = [scene_item(folder, files) for folder in sorted(scenes.iterdir())]
        with running(StacApi(items)) as api:
            yield Catalogue(files, api, scenes)


@pytest.fixture(autouse=True)
def _no_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts with no pending faults and an empty request log."""
    if "catalogue" not in request.fixturenames:
        yield
        return
    cat: Catalogue = request.getfixturevalue("catalogue")
    for server in (cat.files, cat.api):
        server.faults.clear()
        server.faults.reset_log()
    yield
    for server in (cat.files, cat.api):
        server.faults.clear()


def _leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file() and p.suffix != ".lock"]


def _item(**props: object) -> dict:
    return {
        "id": "S2B_18LTM_20220217_0_L2A", "collection": "sentinel-2-l2a",
        "geometry": {"type": "Polygon", "coordinates": [[[-77.2, -12.2], [-76.8, -12.2], [-76.8, -11.8],
                                                          [-77.2, -11.8], [-77.2, -12.2]]]},
        "properties": {"datetime": "2022-02-17T15:26:39.024000Z", "eo:cloud_cover": 12.5,
                       "s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": False} | props,
        "assets": {"red": {"href": "https://x/B04.tif", "type": "image/tiff; profile=cloud-optimized"},
                   "red-jp2": {"href": "s3://x/B04.jp2", "type": "image/jp2"},
                   "B08": {"href": "https://x/B08.tif"}, "scl": {"href": "https://x/SCL.tif"},
                   "thumbnail": {"href": "https://x/preview.jpg"}},
    }  # fmt: skip


def test_items_become_scenes_with_bands_offset_and_cloud() -> None:
    scene = scene_from_item(_item())
    assert scene.acquired == date(2022, 2, 17) and scene.level == "L2A" and scene.cloud_cover == 12.5
    assert scene.assets == {
        "B04": "https://x/B04.tif",
        "B08": "https://x/B08.tif",
        "SCL": "https://x/SCL.tif",
    }
    assert scene.boa_offset == -1000.0 and scene.processing_baseline == "04.00"
    assert scene_from_item(_item(**{"earthsearch:boa_offset_applied": True})).boa_offset == 0.0
    assert scene_from_item(_item(**{"s2:processing_baseline": "02.14"})).boa_offset == 0.0
    assert scene.footprint.bounds == (-77.2, -12.2, -76.8, -11.8)
    assert [band_of_asset(k) for k in ("swir16", "nir08", "b11", "scl", "visual")] == [
        "B11", "B8A", "B11", "SCL", None,
    ]  # fmt: skip


def test_search_pages_and_filters_by_period_cloud_and_aoi(catalogue: Catalogue, tmp_path: Path) -> None:
    source = catalogue.source(tmp_path, page_size=1)  # one item per page: paging must be followed
    aoi = load_aoi("lima_callao")
    (b0, b1), (a0, a1) = PERIODS
    after = source.search(aoi, a0, a1)
    local_after = LocalSource(catalogue.scenes).search(aoi, a0, a1)
    assert [s.acquired for s in after] == [s.acquired for s in local_after] == [
        date(2022, 2, 7), date(2022, 2, 17),
    ]  # fmt: skip
    assert all(s.boa_offset == -1000.0 and s.has_scl and s.source == "stac" for s in after)
    assert catalogue.api.faults.count("/search") == 2
    before = source.search(aoi, b0, b1)
    assert [s.boa_offset for s in before] == [0.0, 0.0] and [s.processing_baseline for s in before] == [
        "02.14", "02.14",
    ]  # fmt: skip
    clouds = sorted(s.cloud_cover or 0.0 for s in after)
    limited = source.search(aoi, a0, a1, max_cloud=(clouds[0] + clouds[1]) / 2)
    assert [s.cloud_cover for s in limited] == [clouds[0]]
    assert source.search(from_geometry("far", box(-70.1, -12.1, -70.0, -12.0), "far"), a0, a1) == []
    assert source.search(aoi, date(2019, 1, 1), date(2019, 2, 1)) == []


def test_emulator_speaks_get_search_and_collections_to_the_unmodified_client(catalogue: Catalogue) -> None:
    from pystac_client import Client

    client = Client.open(catalogue.api.root)
    assert client.get_collection(COLLECTION).id == COLLECTION
    (a0, a1), aoi = PERIODS[1], load_aoi("lima_callao")
    search = client.search(
        collections=[COLLECTION], bbox=list(aoi.geometry.bounds), datetime=f"{a0}/{a1}",
        query={"eo:cloud_cover": {"lte": 100}}, limit=1, method="GET",
    )  # fmt: skip
    ids = [item.id for item in search.items()]
    assert ids == [i["id"] for i in catalogue.api.items if i["properties"]["datetime"] >= str(a0)]
    assert catalogue.api.faults.count("/search") == 2  # one item per page, next links followed by GET
    assert {s.method for s in catalogue.api.faults.seen if "/search" in s.path} == {"GET"}
    bad = requests.get(f"{catalogue.api.root}/search", params={"datetime": "last tuesday"}, timeout=5)
    assert bad.status_code == 400 and "bad search parameters" in bad.json()["description"]


def test_search_honours_retry_after_and_survives_transient_faults(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    source = catalogue.source(tmp_path)
    aoi = load_aoi("lima_callao")
    a0, a1 = PERIODS[1]
    expected = [s.id for s in source.search_catalogue(aoi, a0, a1)]
    catalogue.api.faults.inject("429", match="/search", retry_after_s=1.5)
    start = time.monotonic()
    assert [s.id for s in source.search_catalogue(aoi, a0, a1)] == expected
    assert time.monotonic() - start >= 1.5
    for kind in ("500", "truncated", "slow"):
        catalogue.api.faults.inject(kind, match="/search", delay_s=2.5)  # type: ignore[arg-type]
        assert [s.id for s in source.search_catalogue(aoi, a0, a1)] == expected, kind
        assert catalogue.api.faults.count("/search", fault=kind) == 1


def test_search_refused_ends_at_once_naming_the_setting(catalogue: Catalogue, tmp_path: Path) -> None:
    catalogue.api.faults.inject("401", times=-1)
    start = time.monotonic()
    with pytest.raises(SourceAuthError, match="stac_url") as err:
        catalogue.source(tmp_path).search(load_aoi("lima_callao"), *PERIODS[1])
    assert "\n" not in str(err.value) and time.monotonic() - start < 1.0
    assert catalogue.api.faults.count() == 1
    assert _leftovers(tmp_path) == []


def test_search_gives_up_in_one_line_when_retries_run_out(catalogue: Catalogue, tmp_path: Path) -> None:
    catalogue.api.faults.inject("500", times=-1, match="/search")
    with pytest.raises(SourceError, match=r"HTTP 500: gave up after 4 attempt\(s\)") as err:
        catalogue.source(tmp_path).search(load_aoi("lima_callao"), *PERIODS[1])
    assert "\n" not in str(err.value) and _leftovers(tmp_path) == []
    assert catalogue.api.faults.count("/search", fault="500") == 4
    with socket.socket() as sock:  # a port nobody listens on: connection refused, retried, then one line
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    down = StacSource(closed, COLLECTION, FetchCache(tmp_path / "down"), FAST)
    with pytest.raises(SourceError, match=r"ConnectionError: gave up after 4 attempt\(s\)"):
        down.search_catalogue(load_aoi("lima_callao"), *PERIODS[1])


def test_settled_period_search_is_cached_recent_one_is_not(catalogue: Catalogue, tmp_path: Path) -> None:
    source = catalogue.source(tmp_path)
    aoi = load_aoi("lima_callao")
    first = source.search(aoi, *PERIODS[1])
    catalogue.api.faults.reset_log()
    assert source.search(aoi, *PERIODS[1]) == first and first
    assert catalogue.api.faults.count() == 0
    today = datetime.now(UTC).date()
    for _ in range(2):
        assert source.search(aoi, today - timedelta(days=30), today) == []
    assert catalogue.api.faults.count("/search") == 2


def _window(source: StacSource) -> tuple:
    aoi = load_aoi("lima_callao")
    before = source.search(aoi, *PERIODS[0])
    after = source.search(aoi, *PERIODS[1])
    plan = plan_run(aoi, before, after, load_settings(tile_size_px=256))
    return after[0], plan.grid.geobox()[100:260, 40:300]


@pytest.mark.parametrize("kind", ["429", "500", "503", "truncated", "slow"])
def test_band_read_retries_transient_faults(catalogue: Catalogue, tmp_path: Path, kind: FaultKind) -> None:
    source = catalogue.source(tmp_path / "cache")
    scene, window = _window(source)
    local = LocalSource(catalogue.scenes)
    (twin,) = [s for s in local.search(load_aoi("lima_callao"), *PERIODS[1]) if s.acquired == scene.acquired]
    catalogue.files.faults.inject(kind, match="_B04", method="GET", retry_after_s=0.2, delay_s=2.5)
    got = source.read(scene, ["B04", "SCL"], window)
    assert catalogue.files.faults.count("_B04", fault=kind) == 1
    want = local.read(twin, ["B04", "SCL"], window)
    np.testing.assert_array_equal(got["B04"], want["B04"])
    np.testing.assert_array_equal(got["SCL"], want["SCL"])
    assert len([p for p in source.cache.entries() if p.suffix == ".tif"]) == 2
    catalogue.files.faults.reset_log()
    again = source.read(scene, ["B04", "SCL"], window)  # from the cache: no request at all
    assert catalogue.files.faults.count() == 0
    np.testing.assert_array_equal(again["B04"], got["B04"])


@pytest.mark.parametrize(
    "kind,error,text",
    [("404", SourceError, "HTTP 404"), ("403", SourceAuthError, "stac_url"),
     ("500", SourceError, "gave up after 4 attempt(s)")],
)  # fmt: skip
def test_band_read_permanent_fault_ends_in_one_line_and_caches_nothing(
    catalogue: Catalogue, tmp_path: Path, kind: FaultKind, error: type[Exception], text: str
) -> None:
    source = catalogue.source(tmp_path / "cache")
    scene, window = _window(catalogue.source(tmp_path / "searches"))
    catalogue.files.faults.inject(kind, times=-1, match="_B04")
    with pytest.raises(error) as err:
        source.read(scene, ["B04"], window)
    message = str(err.value)
    assert text in message and "\n" not in message and scene.id in message
    assert _leftovers(tmp_path / "cache") == []
    attempts = catalogue.files.faults.count("_B04", fault=kind)
    assert attempts >= (4 if kind == "500" else 1)
    if kind != "500":  # permanent: no retry rounds (GDAL itself may probe twice on open)
        assert attempts <= 2


def test_signed_asset_urls_keep_tokens_out_of_messages_and_cache_keys(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    scene, window = _window(catalogue.source(tmp_path / "searches"))

    def signed(token: str) -> Scene:
        return scene.model_copy(update={"assets": {b: f"{h}?sig={token}" for b, h in scene.assets.items()}})

    source = catalogue.source(tmp_path / "cache")
    catalogue.files.faults.inject("404", times=-1, match="_B04")
    with pytest.raises(SourceError) as err:
        source.read(signed("SECRET1"), ["B04"], window)
    assert "SECRET1" not in str(err.value) and "_B04.tif" in str(err.value)
    catalogue.files.faults.clear()
    got = source.read(signed("SECRET1"), ["B04"], window)
    assert not any("SECRET" in p.read_bytes().decode("latin-1") for p in _leftovers(tmp_path / "cache"))
    catalogue.files.faults.reset_log()
    again = source.read(signed("SECRET2"), ["B04"], window)  # a fresh signature: same asset, cached
    assert catalogue.files.faults.count() == 0
    np.testing.assert_array_equal(again["B04"], got["B04"])


def _layers(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for name in ("change_score.tif", "change_class.tif"):
        with rasterio.open(folder / name) as src:
            out[name] = src.read(1)
    return out


def _hotspots(folder: Path) -> list[tuple]:
    features = json.loads((folder / "hotspots.geojson").read_text())["features"]
    return sorted(
        (f["properties"]["id"], f["properties"]["change_type"], f["properties"]["area_m2"],
         json.dumps(f["geometry"]))
        for f in features
    )  # fmt: skip


@pytest.mark.slow
def test_stac_run_equals_local_run_and_rerun_makes_no_request(catalogue: Catalogue, tmp_path: Path) -> None:
    aoi = load_aoi("lima_callao")
    settings = load_settings(tile_size_px=256)
    local = LocalSource(catalogue.scenes)
    stac = catalogue.source(tmp_path / "cache")
    plans = {
        name: plan_run(aoi, src.search(aoi, *PERIODS[0]), src.search(aoi, *PERIODS[1]), settings)
        for name, src in (("local", local), ("stac", stac))
    }
    assert plans["local"].grid == plans["stac"].grid
    for period in ("before", "after"):
        pairs = zip(getattr(plans["local"], period), getattr(plans["stac"], period), strict=True)
        assert all(a.acquired == b.acquired and a.boa_offset == b.boa_offset for a, b in pairs)
    detect(plans["local"], local, tmp_path / "local")
    assert DECODED_BLOCKS.held_bytes == 0 and len(OPEN_RASTERS) == 0  # the tile pass let go of its reads
    catalogue.files.faults.reset_log()
    detect(plans["stac"], stac, tmp_path / "stac")
    assert catalogue.files.faults.count() > 0  # pixels came over HTTP
    want, got = _layers(tmp_path / "local"), _layers(tmp_path / "stac")
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert (want["change_class.tif"] > 0).any() and (want["change_class.tif"] < 255).any()
    assert _hotspots(tmp_path / "stac") == _hotspots(tmp_path / "local")
    catalogue.files.faults.reset_log()
    catalogue.api.faults.reset_log()
    aoi_again = load_aoi("lima_callao")  # the whole run again: search, plan, detect
    replan = plan_run(aoi_again, stac.search(aoi_again, *PERIODS[0]), stac.search(aoi_again, *PERIODS[1]),
                      settings)  # fmt: skip
    assert replan == plans["stac"]
    detect(replan, stac, tmp_path / "rerun")
    assert catalogue.requests() == 0
    again = _layers(tmp_path / "rerun")
    for name in want:
        np.testing.assert_array_equal(again[name], want[name], err_msg=name)


@pytest.mark.slow
def test_nightly_flow_on_stac_publishes_and_a_second_run_makes_no_request(
    catalogue: Catalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from flows.nightly import nightly

    for key, value in _env(catalogue, tmp_path / "cache").items():
        monkeypatch.setenv(key, value)
    params = NightlyParams(source="stac", run_date=demo.RUN_DATE, output_root=str(tmp_path / "first"))
    with prefect_test_harness():
        first = Path(nightly(params))
        meta = json.loads((first / "run.json").read_text())
        assert [s["boa_offset"] for s in meta["scenes"]["after"]] == [-1000.0, -1000.0]
        assert {s["source"] for s in [*meta["scenes"]["before"], *meta["scenes"]["after"]]} == {"stac"}
        catalogue.files.faults.reset_log()
        catalogue.api.faults.reset_log()
        # A new output root: no finished tile to reuse, every pixel must come from the download cache.
        second = Path(nightly(params.model_copy(update={"output_root": str(tmp_path / "second")})))
    assert catalogue.requests() == 0
    for name, pixels in _layers(first).items():
        np.testing.assert_array_equal(_layers(second)[name], pixels, err_msg=name)


def test_real_oscd_l1c_scene_reads_the_same_over_http(oscd: Path, tmp_path: Path) -> None:
    folder = oscd / "paris" / "before"
    with running(FileServer(folder)) as files:
        item = scene_item(folder, files, collection="sentinel-2-l1c", item_id="S2A_31UDQ_20161130_0_L1C")
        with running(StacApi([item], collection="sentinel-2-l1c")) as api:
            source = StacSource(api.root, "sentinel-2-l1c", FetchCache(tmp_path), FAST)
            aoi = load_aoi(str(oscd / "paris" / "aoi.geojson"))
            (scene,) = source.search(aoi, date(2016, 11, 1), date(2016, 11, 30))
            assert scene.level == "L1C" and not scene.has_scl and scene.boa_offset == 0.0
            gbox = run_geobox(aoi)
            assert gbox.crs.epsg == 32631
            got = source.read(scene, ["B04", "B11"], gbox)
    want = read_scene_bands(open_scene(folder), ["B04", "B11"], gbox)
    for band in ("B04", "B11"):
        assert np.isfinite(want[band]).mean() > 0.95  # the UTM grid of the rectangle overhangs a little
        np.testing.assert_array_equal(got[band], want[band])


def test_same_day_granules_make_one_look(catalogue: Catalogue, tmp_path: Path) -> None:
    folder = next(p for p in sorted(catalogue.scenes.iterdir()) if "20220207" in p.name)
    items = [
        scene_item(folder, catalogue.files),
        scene_item(folder, catalogue.files, item_id="S2A_18LTM_20220207_1_L2A"),
    ]
    with running(StacApi(items)) as api:
        source = StacSource(api.root, COLLECTION, FetchCache(tmp_path), FAST)
        scenes = source.search(load_aoi("lima_callao"), *PERIODS[1])
        assert len(scenes) == 2 and len({s.acquired for s in scenes}) == 1
        _, window = _window(catalogue.source(tmp_path / "other"))
        composite = read_composite(source, scenes, window, load_settings())
        assert composite.valid_looks.max() == 1


def test_per_tile_selection_skips_clouded_scenes_without_reading_their_bands(tmp_path: Path) -> None:
    refl = textured_reflectance((64, 64))
    clear, cloudy, patchy = (np.full((32, 32), 4, np.uint8) for _ in range(3))
    cloudy[:] = 9
    patchy[:, 4:] = 8  # a sixth of the window below clear
    root = tmp_path / "scenes"
    for day, scl in (("20240105", clear), ("20240110", cloudy), ("20240115", patchy)):
        write_scene(root / f"S2A_MSIL2A_{day}T152639_N0510_T18LTM", refl, date=day, scl=scl, offset=-1000.0)
    with running(FileServer(root)) as files:
        items = [scene_item(f, files, item_id=f.name) for f in sorted(root.iterdir())]
        with running(StacApi(items)) as api:
            source = StacSource(api.root, COLLECTION, FetchCache(tmp_path / "cache"), FAST)
            scenes = source.search(from_geometry("t", box(-77.2, -12.2, -76.9, -11.9), "t"),
                                   date(2024, 1, 1), date(2024, 1, 31))  # fmt: skip
            assert len(scenes) == 3
            window = run_geobox(from_geometry("w", scenes[0].footprint, "w"))[4:28, 4:28]
            composite = read_composite(source, scenes, window, load_settings(mask={"dilate_px": 0}))
            assert composite.valid_looks.max() == 2 and composite.valid_looks.min() == 1
            assert files.faults.count("20240110") == files.faults.count("20240110T152639_SCL") > 0
            strict = load_settings(mask={"dilate_px": 0, "min_valid_share": 0.5})
            only_clear = read_composite(source, scenes, window, strict)
            assert (only_clear.valid_looks == 1).all()
            first = read_composite(source, scenes[:1], window, strict)
            np.testing.assert_array_equal(only_clear.bands, first.bands)


def _env(catalogue: Catalogue, cache: Path) -> dict[str, str]:
    return {
        "VIGIA_STAC_URL": catalogue.api.root, "VIGIA_CACHE_DIR": str(cache), "VIGIA_TILE_SIZE_PX": "256",
        "VIGIA_RETRY__BASE_DELAY_S": "0.05", "VIGIA_RETRY__REQUEST_TIMEOUT_S": "2",
    }  # fmt: skip


def test_vigia_search_lists_scenes_per_period(catalogue: Catalogue, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["search", "--source", "stac", "--run-date", demo.RUN_DATE], env=_env(catalogue, tmp_path)
    )
    assert result.exit_code == 0, result.output
    text = result.output
    assert "before 2021-01-20..2021-02-18: 2 scene(s), 2 look(s)" in text
    assert "after 2022-01-20..2022-02-18: 2 scene(s), 2 look(s)" in text
    for item in catalogue.api.items:
        assert item["id"] in text
    assert "2022-02-17" in text and "-1000" in text and "04.00" in text
    catalogue.api.faults.inject("401", times=-1)
    refused = runner.invoke(  # a fresh cache: the settled periods' results above are cached
        app, ["search", "--source", "stac", "--run-date", demo.RUN_DATE], env=_env(catalogue, tmp_path / "b")
    )
    assert refused.exit_code == 2
    assert "credentials refused: check stac_url" in refused.output and refused.output.count("\n") == 1


@pytest.mark.slow
def test_vigia_fetch_fills_the_cache_a_run_then_reads_offline(catalogue: Catalogue, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = runner.invoke(
        app, ["fetch", "--source", "stac", "--run-date", demo.RUN_DATE], env=_env(catalogue, cache)
    )
    assert result.exit_code == 0, result.output
    assert "cached" in result.output and str(cache) in result.output
    assert catalogue.files.faults.count() > 0
    catalogue.files.faults.reset_log()
    aoi = load_aoi("lima_callao")
    source = catalogue.source(cache / "stac")
    plan = plan_run(aoi, source.search(aoi, *PERIODS[0]), source.search(aoi, *PERIODS[1]),
                    load_settings(tile_size_px=256))  # fmt: skip
    detect(plan, source, tmp_path / "out")
    assert catalogue.files.faults.count() == 0
    assert (tmp_path / "out" / "change_class.tif").exists()


def _online(host: str) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=3):
            return True
    except OSError:
        return False


@pytest.mark.live
def test_live_earth_search_finds_lima_scenes(tmp_path: Path) -> None:
    if not _online("earth-search.aws.element84.com"):
        pytest.skip("no network to earth-search.aws.element84.com")
    settings = load_settings()
    source = StacSource(settings.stac_url, settings.stac_collection, FetchCache(tmp_path))
    scenes = source.search(load_aoi("lima_callao"), date(2024, 1, 1), date(2024, 1, 31), max_cloud=60)
    assert scenes and all({"B04", "B08", "SCL"} <= set(s.assets) for s in scenes)
