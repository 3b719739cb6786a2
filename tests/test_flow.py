from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.nightly import NightlyParams, nightly
from imagery import demo
from imagery.evaluate import evaluate


@pytest.mark.slow
def test_nightly_flow_publishes_demo_run(demo_data: Path, tmp_path: Path) -> None:
    params = NightlyParams(
        local_root=str(demo_data / "scenes"), run_date=demo.RUN_DATE, output_root=str(tmp_path)
    )
    with prefect_test_harness():
        published = Path(nightly(params))
    assert published == tmp_path / "lima_callao" / demo.RUN_DATE
    assert (tmp_path / "lima_callao" / "latest").resolve() == published.resolve()
    assert not list((tmp_path / "lima_callao").glob(".*staging"))
    meta = json.loads((published / "run.json").read_text())
    assert [s["boa_offset"] for s in meta["scenes"]["after"]] == [-1000.0, -1000.0]
    assert [s["boa_offset"] for s in meta["scenes"]["before"]] == [0.0, 0.0]
    shift = meta["coregistration"]
    assert abs(shift["dx_px"] - demo.AFTER_SHIFT_PX[0]) < 0.05
    assert abs(shift["dy_px"] - demo.AFTER_SHIFT_PX[1]) < 0.05
    scores = evaluate(published / "change_class.tif", demo_data / "truth.tif")
    assert scores.recall > 0.8
