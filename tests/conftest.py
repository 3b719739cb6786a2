"""Shared fixtures: real data location, tiny written scenes, the demo data set, one demo run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagery import demo

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VIGIA_SHARED_DATA", REPO.parent / "shared" / "data"))
OSCD = SHARED_DATA / "oscd-dev"
PERU = SHARED_DATA / "peru"
#: Prefect's temporary test server can take long to start on a loaded 2-core machine.
PREFECT_STARTUP_S = 180


def require_shared() -> Path:
    """The shared real data folder, or a skip naming where it was expected."""
    if not OSCD.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set VIGIA_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def oscd() -> Path:
    """../shared/data/oscd-dev."""
    require_shared()
    return OSCD


@pytest.fixture(scope="session")
def peru() -> Path:
    """../shared/data/peru."""
    require_shared()
    return PERU


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo scenes and truth, generated once per session."""
    cached = os.environ.get("VIGIA_TEST_DEMO_DATA")
    folder = Path(cached) if cached else tmp_path_factory.mktemp("demo")
    return demo.generate(folder)


@pytest.fixture(scope="session")
def demo_run(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The nightly flow run once per session on the demo data in Prefect's test harness, with the
    Lima/Callao districts when the shared data is present: (output root, run folder)."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.nightly import NightlyParams, nightly

    districts = PERU / "lima_callao_districts.geojson"
    root = tmp_path_factory.mktemp("runs")
    params = NightlyParams(
        local_root=str(demo_data / "scenes"), run_date=demo.RUN_DATE, output_root=str(root),
        districts=str(districts) if districts.exists() else None,
    )  # fmt: skip
    with prefect_test_harness(server_startup_timeout=PREFECT_STARTUP_S):
        return root, Path(nightly(params))


#: Edge of the small demo the operations tests run on (quick; 15 tiles at 128 px).
SMALL_DEMO_PX = 512


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 512 px demo (same generator, same planted change types) for the operations tests."""
    return demo.generate(tmp_path_factory.mktemp("demo-small"), size_px=SMALL_DEMO_PX)
