"""Nightly operations end to end with real parts: a Prefect server, deployments and a worker, a Dask
scheduler with worker processes, SIGKILL in the middle of a run, reruns, the ledger."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from imagery import demo
from imagery.ledger import Ledger, hotspot_sightings, hotspots, ledger_url, run_tiles, runs
from tests.servers import BIN, REPO, dask_cluster, prefect_server, run_flow, start_flow

pytestmark = pytest.mark.slow
AOI = "lima_callao"
N_TILES = 15  # the 512 px demo at 128 px tiles


def params(demo_data: Path, root: Path, **extra: Any) -> dict[str, Any]:
    """Nightly parameters for the small demo published under `root`."""
    return {"local_root": str(demo_data / "scenes"), "run_date": demo.RUN_DATE, "output_root": str(root),
            "tile_size_px": 128, **extra}  # fmt: skip


def layers(run: Path) -> dict[str, Any]:
    """What a reader gets from a run: the two rasters and the hotspots (attributes + geometry)."""
    with rasterio.open(run / "change_class.tif") as ds:
        classes = ds.read(1)
    with rasterio.open(run / "change_score.tif") as ds:
        score = ds.read(1)
    features = json.loads((run / "hotspots.geojson").read_text())["features"]
    spots = sorted(json.dumps(f, sort_keys=True) for f in features)
    return {"classes": classes, "score": score, "hotspots": spots}


def assert_same_layers(a: dict[str, Any], b: dict[str, Any]) -> None:
    np.testing.assert_array_equal(a["classes"], b["classes"])
    np.testing.assert_array_equal(a["score"], b["score"])  # NaN == NaN here
    assert a["hotspots"] == b["hotspots"]
    assert len(a["hotspots"]) > 5


def finished_tiles(cache: Path) -> list[Path]:
    """Cached tile files, without the temporary file a killed writer leaves behind."""
    return [p for p in cache.glob("*.tile") if not p.name.startswith(".")]


def ledger_of(root: Path) -> Ledger:
    return Ledger(ledger_url(root))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real Prefect server on a free loopback port; yields the environment of its clients."""
    with prefect_server(tmp_path_factory.mktemp("prefect")) as env:
        yield env


@pytest.fixture(scope="module")
def reference(
    small_demo: Path, server: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """An uninterrupted run on the local cluster: (output root, its layers)."""
    root = tmp_path_factory.mktemp("reference")
    run = run_flow(params(small_demo, root), server, root / "flow.log")
    return root, layers(run)


class LatestWatcher(threading.Thread):
    """Polls OUTPUT/<aoi>/latest and records the file set of every run folder it sees there."""

    def __init__(self, aoi_dir: Path) -> None:
        super().__init__(daemon=True)
        self.link = aoi_dir / "latest"
        self.seen: list[frozenset[str]] = []
        self.unreadable = 0
        self.missing_after_publish = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                names = frozenset(os.listdir(self.link))
                json.loads((self.link / "run.json").read_text())
                self.seen.append(names)
            except FileNotFoundError:
                self.missing_after_publish += bool(self.seen)  # before the first publish: expected
            except (OSError, ValueError):
                self.unreadable += 1
            time.sleep(0.005)


def test_idempotent_rerun_and_corrupt_cached_tile(
    small_demo: Path, server: dict[str, str], reference: tuple[Path, dict[str, Any]]
) -> None:
    root, first = reference
    ledger = ledger_of(root)
    watcher = LatestWatcher(root / AOI)
    watcher.start()
    published = run_flow(params(small_demo, root), server, root / "rerun.log")
    watcher.halt.set()
    watcher.join()
    assert_same_layers(layers(published), first)
    # the rerun swapped the run folder in one step: `latest` was never missing, partial or unreadable
    assert watcher.seen and watcher.missing_after_publish == 0 and watcher.unreadable == 0
    assert set(watcher.seen) == {frozenset(os.listdir(published))}
    ids = [json.loads(h)["properties"]["id"] for h in first["hotspots"]]
    assert len(ledger.rows(hotspots, aoi=AOI)) == len(set(ids)) == len(ids)
    assert len(ledger.rows(hotspot_sightings, aoi=AOI)) == len(ids)
    done = ledger.rows(runs, aoi=AOI)
    assert [r["status"] for r in done] == ["completed", "completed"]
    assert [t["reused"] for t in ledger.rows(run_tiles, run_id=done[1]["id"])] == [True] * N_TILES

    victim = Path(ledger.rows(run_tiles, run_id=done[1]["id"])[4]["path"])
    data = bytearray(victim.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 256] = os.urandom(256)
    victim.write_bytes(bytes(data))
    published = run_flow(params(small_demo, root), server, root / "corrupt.log")
    assert_same_layers(layers(published), first)
    third = ledger.rows(run_tiles, run_id=ledger.rows(runs, aoi=AOI)[2]["id"])
    assert {t["path"] for t in third if not t["reused"]} == {str(victim)}
    assert len(ledger.rows(hotspots, aoi=AOI)) == len(ids)


def test_flow_on_a_dask_cluster_equals_the_local_run(
    small_demo: Path, server: dict[str, str], reference: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    from distributed import Client

    with dask_cluster(tmp_path / "dask") as address:
        published = run_flow(
            params(small_demo, tmp_path / "out", dask_address=address), server, tmp_path / "flow.log"
        )
        with Client(address) as client:
            per_worker = client.run(
                lambda dask_worker: {
                    str(e[0]) for e in dask_worker.state.log if str(e[0]).startswith("vigia-tile-")
                }
            )
    assert len(per_worker) == 2 and all(per_worker.values())  # both worker processes took tiles
    assert len(set().union(*per_worker.values())) == N_TILES
    assert_same_layers(layers(published), reference[1])


def test_sigkill_mid_tiles_then_rerun_reuses_tiles_and_never_exposes_a_partial_run(
    small_demo: Path, server: dict[str, str], reference: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root = tmp_path / "out"
    run_params = params(small_demo, root, workers=1)
    cache = root / AOI / ".tiles"
    watcher = LatestWatcher(root / AOI)
    watcher.start()
    proc = start_flow(run_params, server, tmp_path / "killed.log")
    deadline = time.monotonic() + 300
    while len(finished_tiles(cache)) < 3:
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    survivors = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished_tiles(cache)}
    assert 3 <= len(survivors) < N_TILES, "the kill did not land in the middle of tile processing"
    assert not (root / AOI / demo.RUN_DATE).exists()

    published = run_flow(run_params, server, tmp_path / "rerun.log")
    watcher.halt.set()
    watcher.join()
    for path, stat in survivors.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stat  # reused, not rewritten
    ledger = ledger_of(root)
    killed, finished = ledger.rows(runs, aoi=AOI)
    assert (killed["status"], finished["status"]) == ("running", "completed")  # the killed run never finished
    tiles = ledger.rows(run_tiles, run_id=finished["id"])
    assert {Path(t["path"]) for t in tiles if t["reused"]} >= set(survivors)
    assert sum(not t["reused"] for t in tiles) >= 1
    assert_same_layers(layers(published), reference[1])
    complete = frozenset(os.listdir(published))
    assert watcher.seen and watcher.unreadable == 0 and watcher.missing_after_publish == 0
    assert set(watcher.seen) == {complete}  # `latest` only ever showed the complete run


def _prefect(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], env=env, cwd=REPO, text=True,
                          capture_output=True, timeout=timeout, check=False)  # fmt: skip


def test_deployments_from_prefect_yaml_run_nightly_on_a_worker(
    small_demo: Path, server: dict[str, str], tmp_path: Path
) -> None:
    env = server | {"PREFECT_HOME": str(tmp_path / "home")}
    created = _prefect(env, "work-pool", "create", "vigia-process", "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = _prefect(env, "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    inspect = _prefect(env, "deployment", "inspect", "vigia-nightly/nightly")
    assert "0 3 * * *" in inspect.stdout and "America/Lima" in inspect.stdout
    assert "'enforce_parameter_schema': True" in inspect.stdout and str(REPO) in inspect.stdout
    assert _prefect(env, "deployment", "inspect", "vigia-backfill/backfill").returncode == 0

    root = tmp_path / "out"
    bad = _prefect(env, "deployment", "run", "vigia-nightly/nightly", "--params",
                   json.dumps({"params": params(small_demo, root, max_cloud=250)}))  # fmt: skip
    assert bad.returncode != 0 and "max_cloud" in bad.stdout + bad.stderr  # the schema is enforced

    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "vigia-process"],
                              env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    try:
        run = _prefect(env, "deployment", "run", "vigia-nightly/nightly", "--params",
                       json.dumps({"params": params(small_demo, root)}), "--watch", "--watch-timeout", "600",
                       timeout=660)  # fmt: skip
    finally:
        from tests.servers import stop

        stop(worker)
        log.close()
    assert run.returncode == 0, run.stdout + run.stderr + (tmp_path / "worker.log").read_text()[-3000:]
    assert "Completed" in run.stdout
    latest = root / AOI / "latest"
    assert latest.resolve() == (root / AOI / demo.RUN_DATE).resolve()
    assert {"change_class.tif", "change_score.tif", "hotspots.geojson", "run.json"} <= set(os.listdir(latest))
    assert ledger_of(root).rows(runs, aoi=AOI)[0]["status"] == "completed"


BACKFILL_SCRIPT = (
    "import sys\n"
    "from flows.backfill import BackfillParams, backfill\n"
    "backfill(BackfillParams.model_validate_json(sys.argv[1]))\n"
)


def test_backfill_runs_the_nightly_flow_per_date(
    small_demo: Path, server: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "out"
    nightly = params(small_demo, root)
    del nightly["run_date"]
    spec = {"start": "2022-02-17", "end": "2022-02-18", "nightly": nightly | {"keep_runs": 1}}
    command = [str(BIN / "python"), "-c", BACKFILL_SCRIPT, json.dumps(spec)]
    done = subprocess.run(
        command, env=server, cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (root / AOI / "latest").resolve() == (root / AOI / "2022-02-18").resolve()
    assert not (root / AOI / "2022-02-17").exists()  # retention: keep_runs 1
    ledger = ledger_of(root)
    first, second = ledger.rows(runs, aoi=AOI)
    assert (first["run_date"], second["run_date"]) == ("2022-02-17", "2022-02-18")
    # both dates see the same scenes: the second run reuses every tile of the first
    assert all(t["reused"] for t in ledger.rows(run_tiles, run_id=second["id"]))
    assert {h["sightings"] for h in ledger.rows(hotspots, aoi=AOI)} == {2}


def test_vigia_serve_registers_the_nightly_schedule(
    small_demo: Path, server: dict[str, str], tmp_path: Path
) -> None:
    from tests.servers import stop

    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    serve = subprocess.Popen([str(BIN / "vigia"), "serve", "--local-root", str(small_demo / "scenes"),
                              "--out", str(tmp_path / "out")], env=server, cwd=tmp_path, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while (found := _prefect(server, "deployment", "inspect", "vigia-nightly/nightly-serve")).returncode:
            assert serve.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(1)
    finally:
        stop(serve)
        log.close()
    assert "0 3 * * *" in found.stdout and "America/Lima" in found.stdout
    assert str(small_demo / "scenes") in found.stdout
