"""The sentinelhub source against a Sentinel Hub emulator on 127.0.0.1, through the real client.

The emulator serves the small demo scenes; the same scenes read through the local source are the
reference, so both sources must give the same pixels and the same published layers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from pydantic import SecretStr
from shapely.geometry import box

from flows.params import NightlyParams, make_source
from imagery import demo
from imagery.aoi import AOI, from_geometry
from imagery.config import Settings
from imagery.errors import SourceError, VigiaError
from imagery.execute import detect
from imagery.grid import run_geobox
from imagery.pipeline import plan_run
from imagery.sources.local import LocalSource
from imagery.sources.retry import RetryPolicy, SourceAuthError
from imagery.sources.sentinelhub import SentinelHubSource
from tests.conftest import PREFECT_STARTUP_S
from tests.emulators.sentinelhub_api import SentinelHubEmulator, load_scenes

EARLY, LATE = date(2020, 1, 1), date(2022, 12, 31)
BANDS = ["B02", "B03", "B04", "B08", "B11", "B12", "SCL"]
FAST = RetryPolicy(
    max_attempts=4, base_delay_s=0.05, max_delay_s=1.5, total_timeout_s=30, request_timeout_s=1.5
)


@pytest.fixture(scope="module")
def emulator(small_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelHubEmulator]:
    """A running emulator over the small demo scenes (its certificate trusted by requests)."""
    emu = SentinelHubEmulator(load_scenes(small_demo / "scenes"), tmp_path_factory.mktemp("tls")).start()
    patch = pytest.MonkeyPatch()
    patch.setenv("REQUESTS_CA_BUNDLE", str(emu.ca_bundle))
    try:
        yield emu
    finally:
        patch.undo()
        emu.stop()


@pytest.fixture()
def fresh(emulator: SentinelHubEmulator) -> SentinelHubEmulator:
    """The emulator with its request log and fault queues cleared."""
    emulator.requests.clear()
    emulator.faults.clear()
    return emulator


def settings_for(emu: SentinelHubEmulator, cache: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "sh_client_id": SecretStr(emu.client_id), "sh_client_secret": SecretStr(emu.client_secret),
        "sh_base_url": emu.base_url, "sh_token_url": emu.token_url, "cache_dir": cache, "retry": FAST,
        "tile_size_px": 256, "workers": 1,
    }  # fmt: skip
    return Settings.model_validate({**values, **changes})


def demo_aoi(small_demo: Path) -> AOI:
    """The demo scenes' common footprint, shrunk a little: the AOI both sources run on."""
    footprints = [s.footprint for s in load_scenes(small_demo / "scenes")]
    common = footprints[0]
    for footprint in footprints[1:]:
        common = common.intersection(footprint)
    return from_geometry("demo", common.buffer(-0.001), "demo footprint")


def test_search_pages_through_the_catalogue_one_scene_per_day(
    fresh: SentinelHubEmulator, small_demo: Path, tmp_path: Path
) -> None:
    aoi = demo_aoi(small_demo)
    (b0, b1), (a0, a1) = NightlyParams(run_date=demo.RUN_DATE).periods()
    source = SentinelHubSource(settings_for(fresh, tmp_path))
    local = LocalSource(small_demo / "scenes")
    fresh.page_size = 1
    for start, end in ((b0, b1), (a0, a1)):
        got = source.search(aoi, start, end)
        want = local.search(aoi, start, end)
        assert [s.acquired for s in got] == [s.acquired for s in want] and len(got) == 2
        assert all(s.level == "L2A" and s.boa_offset == 0.0 and s.cloud_cover is not None for s in got)
    assert fresh.count("catalog") >= 4  # one page per scene: paging was followed
    fresh.page_size = 100
    cloudy = max(s.cloud_cover for s in load_scenes(small_demo / "scenes"))
    clear = source.search(aoi, b0, a1, max_cloud=cloudy - 0.01)
    assert len(clear) == 3  # the cloudiest scene is filtered by the catalogue


def test_reads_equal_the_local_source(fresh: SentinelHubEmulator, small_demo: Path, tmp_path: Path) -> None:
    aoi = demo_aoi(small_demo)
    gbox = run_geobox(aoi, 10.0)[10:140, 20:200]
    local = LocalSource(small_demo / "scenes")
    source = SentinelHubSource(settings_for(fresh, tmp_path))
    for mine, theirs in zip(source.search(aoi, EARLY, LATE), local.search(aoi, EARLY, LATE), strict=True):
        got, want = source.read(mine, BANDS, gbox), local.read(theirs, BANDS, gbox)
        for band in BANDS:
            np.testing.assert_array_equal(got[band], want[band], err_msg=f"{mine.id} {band}")
        assert np.isfinite(got["B04"]).mean() > 0.9


def test_second_read_makes_no_request_and_the_cache_holds_no_secret(
    fresh: SentinelHubEmulator, small_demo: Path, tmp_path: Path
) -> None:
    aoi = demo_aoi(small_demo)
    gbox = run_geobox(aoi, 10.0)[:64, :64]
    settings = settings_for(fresh, tmp_path)
    scenes = SentinelHubSource(settings).search(aoi, EARLY, date(2021, 3, 1))
    first = SentinelHubSource(settings).read(scenes[0], BANDS, gbox)
    fresh.requests.clear()
    again = SentinelHubSource(settings).read(scenes[0], BANDS, gbox)
    assert fresh.requests == []
    np.testing.assert_array_equal(again["B08"], first["B08"])
    # settled catalogue periods are cached too
    SentinelHubSource(settings).search(aoi, EARLY, date(2021, 3, 1))
    assert fresh.requests == []
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert fresh.client_secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("fault", ["429", "500", "slow", "truncate"])
def test_transient_faults_are_retried(
    fault: str, fresh: SentinelHubEmulator, small_demo: Path, tmp_path: Path
) -> None:
    aoi = demo_aoi(small_demo)
    gbox = run_geobox(aoi, 10.0)[:64, :64]
    source = SentinelHubSource(settings_for(fresh, tmp_path))
    scene = source.search(aoi, EARLY, date(2021, 3, 1))[0]
    fresh.faults["process"] = [fault]
    data = source.read(scene, ["B04"], gbox)
    assert np.isfinite(data["B04"]).all()
    assert fresh.count("process") == 2  # the failed try and the retry
    assert fresh.faults["process"] == []


def test_wrong_credentials_end_with_one_line_naming_the_setting(
    fresh: SentinelHubEmulator, small_demo: Path, tmp_path: Path
) -> None:
    settings = settings_for(fresh, tmp_path, sh_client_secret=SecretStr("not-the-secret"))
    with pytest.raises(SourceAuthError) as info:
        SentinelHubSource(settings).search(demo_aoi(small_demo), EARLY, date(2021, 3, 1))
    message = str(info.value)
    assert "\n" not in message and "VIGIA_SH_CLIENT_SECRET" in message and "not-the-secret" not in message
    assert fresh.count("token") == 1  # not retried
    assert not any(tmp_path.rglob("*.json"))


def test_permanent_faults_leave_no_cache_entry(
    fresh: SentinelHubEmulator, small_demo: Path, tmp_path: Path
) -> None:
    aoi = demo_aoi(small_demo)
    gbox = run_geobox(aoi, 10.0)[:64, :64]
    source = SentinelHubSource(settings_for(fresh, tmp_path))
    scene = source.search(aoi, EARLY, date(2021, 3, 1))[0]
    fresh.faults["process"] = ["403"]
    with pytest.raises(SourceAuthError, match="HTTP 403, credentials refused"):
        source.read(scene, ["B04"], gbox)
    fresh.faults["process"] = ["500"] * 10
    with pytest.raises(SourceError, match=r"HTTP 500: gave up after 4 attempt\(s\)"):
        source.read(scene, ["B04"], gbox)
    assert [p for p in tmp_path.rglob("*.tif")] == []


def test_missing_credentials_name_the_settings(tmp_path: Path) -> None:
    with pytest.raises(VigiaError, match="no credentials: set VIGIA_SH_CLIENT_ID / VIGIA_SH_CLIENT_SECRET"):
        SentinelHubSource(Settings(cache_dir=tmp_path))


@pytest.mark.slow
def test_detect_through_sentinelhub_equals_local(
    fresh: SentinelHubEmulator, small_demo: Path, tmp_path: Path
) -> None:
    aoi = demo_aoi(small_demo)
    (b0, b1), (a0, a1) = NightlyParams(run_date=demo.RUN_DATE).periods()
    settings = settings_for(fresh, tmp_path / "cache")
    outputs = {}
    for name, source in (
        ("local", LocalSource(small_demo / "scenes")),
        ("sentinelhub", SentinelHubSource(settings)),
    ):
        plan = plan_run(aoi, source.search(aoi, b0, b1), source.search(aoi, a0, a1), settings)
        outputs[name] = detect(plan, source, tmp_path / name)
    for layer in ("change_class", "change_score"):
        with rasterio.open(outputs["local"][layer]) as a, rasterio.open(outputs["sentinelhub"][layer]) as b:
            np.testing.assert_array_equal(a.read(1), b.read(1))
    spots = {name: json.loads(Path(out["hotspots"]).read_text())["features"] for name, out in outputs.items()}
    assert spots["local"] and [f["properties"]["id"] for f in spots["local"]] == [
        f["properties"]["id"] for f in spots["sentinelhub"]
    ]


@pytest.mark.slow
def test_credentials_from_a_prefect_secret_block(
    fresh: SentinelHubEmulator, small_demo: Path, tmp_path: Path
) -> None:
    from prefect.blocks.system import Secret
    from prefect.testing.utilities import prefect_test_harness

    settings = settings_for(fresh, tmp_path).model_copy(
        update={"sh_client_id": None, "sh_client_secret": None, "sh_secret_block": "vigia-sh"}
    )
    params = NightlyParams(source="sentinelhub")
    with prefect_test_harness(server_startup_timeout=PREFECT_STARTUP_S):
        with pytest.raises(VigiaError, match="Prefect Secret block 'vigia-sh' not found"):
            make_source(params, settings)
        Secret(value={"client_id": fresh.client_id, "client_secret": fresh.client_secret}).save("vigia-sh")
        source = make_source(params, settings)
        scenes = source.search(demo_aoi(small_demo), EARLY, LATE)
    assert len(scenes) == 4
    assert fresh.client_secret not in json.dumps([s.model_dump(mode="json") for s in scenes])
    assert "**********" in settings_for(fresh, tmp_path).model_dump_json()


@pytest.mark.live
def test_live_sentinelhub_over_miraflores(tmp_path: Path) -> None:
    """Against the real service: needs VIGIA_SH_CLIENT_ID/SECRET (and VIGIA_SH_* URLs for CDSE)."""
    import os

    if not (os.environ.get("VIGIA_SH_CLIENT_ID") and os.environ.get("VIGIA_SH_CLIENT_SECRET")):
        pytest.skip("live Sentinel Hub test: VIGIA_SH_CLIENT_ID / VIGIA_SH_CLIENT_SECRET not set")
    from imagery.config import load_settings

    aoi = from_geometry("miraflores", box(-77.05, -12.13, -77.02, -12.11), "miraflores")
    source = SentinelHubSource(load_settings(cache_dir=tmp_path))
    scenes = source.search(aoi, date(2024, 1, 1), date(2024, 1, 31), max_cloud=60)
    assert scenes and all(s.acquired.month == 1 for s in scenes)
    data = source.read(scenes[0], ["B04", "SCL"], run_geobox(aoi, 10.0)[:64, :64])
    assert data["B04"].shape == (64, 64) and np.nanmax(data["B04"]) > 0
