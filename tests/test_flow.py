from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagery import demo
from imagery.evaluate import evaluate


@pytest.mark.slow
def test_nightly_flow_publishes_demo_run(demo_data: Path, demo_run: tuple[Path, Path]) -> None:
    tmp_path, published = demo_run
    assert published == tmp_path / "lima_callao" / demo.RUN_DATE
    assert (tmp_path / "lima_callao" / "latest").resolve() == published.resolve()
    assert not list((tmp_path / "lima_callao").glob(".*staging"))
    meta = json.loads((published / "run.json").read_text())
    assert [s["boa_offset"] for s in meta["scenes"]["after"]] == [-1000.0, -1000.0]
    assert [s["boa_offset"] for s in meta["scenes"]["before"]] == [0.0, 0.0]
    coreg = meta["coregistration"]
    shift = coreg["summary"]
    assert abs(shift["dx_px"] - demo.AFTER_SHIFT_PX[0]) < 0.05
    assert abs(shift["dy_px"] - demo.AFTER_SHIFT_PX[1]) < 0.05
    assert abs(shift["dx_m"] - 10 * demo.AFTER_SHIFT_PX[0]) < 0.5
    # Every tile was matched; the demo shift is uniform, so no tile deviates from the global model.
    assert len(coreg["tiles"]) == shift["tiles_local"] + shift["tiles_global_fallback"] >= 4
    assert shift["max_local_correction_px"] < 0.05
    assert all(t["n_windows"] > 0 for t in coreg["tiles"])
    scores = evaluate(published / "change_class.tif", demo_data / "truth.tif")
    assert scores.recall > 0.8


@pytest.mark.slow
def test_demo_greening_and_glint_are_not_man_made(demo_data: Path, demo_run: tuple[Path, Path]) -> None:
    import numpy as np
    import rasterio
    from odc.geo.geobox import GeoBox

    from imagery.sources.raster import read_band

    published = demo_run[1]
    with rasterio.open(demo_data / "truth.tif") as src:
        truth, gbox = src.read(1), GeoBox.from_rio(src)
    classes = read_band(str(published / "change_class.tif"), gbox, categorical=True)
    man_made = np.isin(classes, [1, 2, 3])
    greening = truth == demo.TRUTH_VEG_GAIN
    assert greening.sum() > 10_000
    assert man_made[greening].mean() < 0.001  # lomas greening is vegetation gain, not a hotspot
    assert (classes[greening] == 5).mean() > 0.9
    ocean = np.zeros(truth.shape, bool)
    ocean[:, :100] = True  # the demo coast lies east of column 120 everywhere
    assert (classes[ocean] == 6).mean() > 0.05  # the glint is seen as water change...
    assert man_made[ocean].mean() < 0.001  # ...and never as man-made change


def test_retry_condition_skips_permanent_faults() -> None:
    from prefect.states import Failed

    from flows.tasks import retry_unless_permanent
    from imagery.errors import InputError
    from imagery.sources.retry import SourceAuthError

    assert not retry_unless_permanent(None, None, Failed(data=InputError("scene x: missing band")))
    assert not retry_unless_permanent(None, None, Failed(data=SourceAuthError("HTTP 401")))
    assert retry_unless_permanent(None, None, Failed(data=OSError("connection reset")))


@pytest.mark.slow
def test_a_permanent_fault_fails_the_run_without_task_retries(tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.testing.utilities import prefect_test_harness

    from flows.nightly import NightlyParams, nightly
    from imagery.errors import InputError
    from tests.conftest import PREFECT_STARTUP_S

    params = NightlyParams(local_root=str(tmp_path / "no-such-folder"), output_root=str(tmp_path / "out"))
    with prefect_test_harness(server_startup_timeout=PREFECT_STARTUP_S):
        with pytest.raises(InputError, match="no-such-folder: no such folder"):
            nightly(params)
        with get_client(sync_client=True) as client:
            plan_runs = [r for r in client.read_task_runs() if r.name.startswith("plan")]
    assert [r.run_count for r in plan_runs] == [1]
    assert not (tmp_path / "out" / "lima_callao").exists() or not any(
        (tmp_path / "out" / "lima_callao").iterdir()
    )
