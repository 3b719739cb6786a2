"""Finished tiles on disk: one `.npz` per tile, written atomically, so a rerun can reuse them."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from imagery.export import atomic_path
from imagery.pipeline import TileResult


def tile_path(folder: Path, name: str) -> Path:
    """Where a tile's result lives."""
    return folder / f"{name}.npz"


def save_tile(result: TileResult, path: Path) -> Path:
    """Write a tile result atomically (a crash never leaves a readable half tile)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh, score=result.score, classes=result.classes,
            looks_before=result.looks_before, looks_after=result.looks_after,
            seconds=np.asarray(json.dumps(result.seconds)),
        )  # fmt: skip
    return path


def load_tile(path: Path) -> TileResult | None:
    """A saved tile, or None when it is missing or unreadable (then it is recomputed)."""
    try:
        with np.load(path) as data:
            seconds = json.loads(str(data["seconds"])) if "seconds" in data.files else {}
            return TileResult(
                score=data["score"], classes=data["classes"],
                looks_before=data["looks_before"], looks_after=data["looks_after"], seconds=seconds,
            )  # fmt: skip
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, json.JSONDecodeError):
        return None
