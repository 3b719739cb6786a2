"""Smoke test of the performance harness at its tiny size: it runs end to end and reports every
stage with numbers (no timing thresholds: benchmarks are not timed unit tests)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import rasterio
from affine import Affine

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "benchmarks" / "performance.py"
STAGES = (
    "decode-only (floor)",
    "pipeline: read+mask+composite",
    "pipeline: co-registration",
    "pipeline: normalisation+change",
    "pipeline: mosaic write",
    "pipeline: hotspots",
    "pipeline total",
    "peer: load+mask+composite",
    "peer: phase correlation+shift",
    "peer: cva+otsu",
    "peer: polygons",
    "peer total",
)
NUMBER = r"\d+\.\d+"


@pytest.mark.slow
def test_harness_tiny_reports_every_stage_and_records_the_table(tmp_path: Path) -> None:
    docs = tmp_path / "performance.md"
    docs.write_text("# Performance\n\nHand-written text stays.\n")
    raw = tmp_path / "raw.json"
    cmd = [
        sys.executable, str(HARNESS), "--tiny", "--workers", "1", "--data-dir", str(tmp_path / "data"),
        "--record", "--docs", str(docs), "--json", str(raw),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    for stage in STAGES:
        row = re.search(rf"^\| {re.escape(stage)} \| ({NUMBER}) \| ({NUMBER}) \|", done.stdout, re.M)
        assert row, f"no row with numbers for {stage!r} in:\n{done.stdout}"
        assert float(row[1]) > 0
    rss = re.search(rf"^\| pipeline total \|.*\| ({NUMBER}) GiB \|$", done.stdout, re.M)
    assert rss and float(rss[1]) > 0
    assert re.search(rf"pipeline / decode-only: \*\*{NUMBER}x\*\*", done.stdout)
    assert re.search(rf"peer / pipeline: \*\*{NUMBER}x\*\*", done.stdout)

    text = docs.read_text()
    assert text.startswith("# Performance\n\nHand-written text stays.")
    assert "### 512 x 640 px" in text and "| pipeline total |" in text
    assert re.search(r"- date: \d{4}-\d\d-\d\d \d\d:\d\d UTC; machine: .+, \d+ cores", text)

    measured = json.loads(raw.read_text())
    assert measured["pipeline"]["result"]["tile_count"] == 1
    assert measured["pipeline"]["peak_rss_bytes"] > 50 * 2**20
    # The scene set is the issue's: Sentinel-2-style deflate COGs, 10 m and 20 m bands, 3 looks per period.
    scenes = sorted((tmp_path / "data" / "512x640" / "scenes").iterdir())
    assert [s.name[11:19] for s in scenes] == [
        "20210128", "20210202", "20210212", "20220202", "20220207", "20220217",
    ]  # fmt: skip
    with rasterio.open(next(scenes[0].glob("*_B02.tif"))) as b02:
        assert (b02.crs.to_epsg(), b02.res, b02.compression.name) == (32718, (10.0, 10.0), "deflate")
        assert b02.block_shapes[0] == (512, 512)
    with rasterio.open(next(scenes[0].glob("*_B11_20m.tif"))) as b11:
        assert b11.res == (20.0, 20.0) and b11.shape == (320, 256)
    assert len(list(scenes[0].glob("*.tif"))) == 7


def _harness_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("performance_harness", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_scene_file_is_the_mirrored_motif_written_strip_by_strip_as_a_cog(tmp_path: Path) -> None:
    harness = _harness_module()
    motif = (np.arange(70 * 90, dtype=np.uint16).reshape(70, 90) * 7) % 5000 + 1
    shape = (2 * harness.STRIP_ROWS + 76, 200)  # three strips, the last one partial
    path = tmp_path / "T18LTM_B02.tif"
    harness.write_mirrored_cog(path, motif, shape, Affine(10, 0, 262_000, 0, -10, 8_724_000), {"BAND": "B02"})

    assert sorted(tmp_path.iterdir()) == [path]  # no scratch file left
    expected = motif[np.ix_(harness._mirror_index(shape[0], 70), harness._mirror_index(shape[1], 90))]
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(ds.read(1), expected)
        assert ds.tags()["BAND"] == "B02" and ds.nodata == 0 and ds.crs.to_epsg() == 32718
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and ds.compression.name == "deflate"
        assert ds.block_shapes[0] == (512, 512) and ds.overviews(1)
