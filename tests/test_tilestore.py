"""Tile files: written atomically, read back exactly, damaged ones refused when checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imagery.pipeline import TileResult
from imagery.tilestore import load_tile, save_tile, tile_path


def _result() -> TileResult:
    rng = np.random.default_rng(4)
    padded = rng.random((40, 50)).astype(np.float32)
    return TileResult(
        score=padded[3:33, 4:44],  # a crop of the padded tile, as run_tile makes them
        classes=rng.integers(0, 6, (30, 40)).astype(np.uint8),
        looks_before=rng.integers(0, 4, (30, 40)).astype(np.uint8),
        looks_after=rng.integers(0, 4, (30, 40)).astype(np.uint8),
        seconds={"read+mask+composite": 0.25},
    )


def test_a_tile_reads_back_exactly(tmp_path: Path) -> None:
    result = _result()
    path = save_tile(result, tile_path(tmp_path, "r000c001"))
    assert path.name == "r000c001.tile" and [p.name for p in tmp_path.iterdir()] == [path.name]
    for verify in (True, False):
        got = load_tile(path, verify=verify)
        assert got is not None and got.seconds == result.seconds
        for name in ("score", "classes", "looks_before", "looks_after"):
            np.testing.assert_array_equal(getattr(got, name), getattr(result, name))
            assert getattr(got, name).dtype == getattr(result, name).dtype


def test_damaged_or_missing_tiles_are_refused(tmp_path: Path) -> None:
    path = save_tile(_result(), tmp_path / "t.tile")
    data = path.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # inside the score's values: only the checksum sees it
    path.write_bytes(bytes(flipped))
    assert load_tile(path) is None
    assert load_tile(path, verify=False) is not None  # publish's read of its own run's tiles
    path.write_bytes(data[: len(data) - 7])
    assert load_tile(path, verify=False) is None
    path.write_bytes(data + b"x")
    assert load_tile(path, verify=False) is None
    assert load_tile(tmp_path / "missing.tile") is None
