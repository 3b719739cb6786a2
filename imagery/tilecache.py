"""Tile cache keys: a finished tile is reused exactly when everything that shapes its pixels is unchanged.

The key of a tile hashes its window (with halo) on the run grid, the settings that change pixels,
the fitted pair model and only the scenes whose footprint touches the tile, so a new scene
invalidates the tiles it touches and no others (unless it changes the pair model, which every
tile applies).
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from shapely.geometry import box

import imagery
from imagery.change import detector_params
from imagery.grid import Tile
from imagery.pipeline import PairModel, RunPlan
from imagery.sources.base import Scene

#: Settings that never change a tile's pixels (where things run and go, vector layers, credentials).
_NOT_PIXEL_SETTINGS = {
    "output_root", "cache_dir", "dask_address", "workers", "worker_memory", "keep_runs", "ledger_url",
    "layers", "sh_client_id", "sh_client_secret", "sh_base_url", "sh_token_url", "stac_url",
    "stac_collection", "sh_secret_block", "retry",
}  # fmt: skip


@cache
def pixel_code_digest() -> str:
    """SHA-256 over the package's source: new code never reuses tiles made by the old (safe, if eager)."""
    digest = hashlib.sha256(imagery.__version__.encode())
    root = Path(imagery.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def touching(scenes: list[Scene], plan: RunPlan, tile: Tile) -> list[Scene]:
    """The scenes whose footprint meets the tile's padded window."""
    padded, _, _ = tile.padded(plan.grid.geobox(), plan.halo)
    outline = box(*padded.geographic_extent.boundingbox)
    return [s for s in scenes if s.footprint.intersects(outline)]


def tile_key(plan: RunPlan, model: PairModel, tile: Tile) -> str:
    """A hex digest of every input of one tile."""
    settings = plan.settings.model_dump(
        mode="json", exclude=_NOT_PIXEL_SETTINGS & set(type(plan.settings).model_fields)
    )
    payload = {
        "grid": plan.grid.model_dump(mode="json"),
        "tile": [tile.row0, tile.col0, tile.height, tile.width, plan.halo],
        "settings": settings,
        "detector": detector_params(plan.settings.change).model_dump(mode="json"),
        "code": pixel_code_digest(),
        "model": model.model_dump(mode="json"),
        "before": [s.model_dump(mode="json") for s in touching(plan.before, plan, tile)],
        "after": [s.model_dump(mode="json") for s in touching(plan.after, plan, tile)],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cached_tile_path(cache_dir: Path, tile: Tile, key: str) -> Path:
    """Where the tile with this key is cached."""
    return cache_dir / f"{tile.name}-{key[:24]}.npz"
