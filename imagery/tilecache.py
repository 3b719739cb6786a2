"""Tile cache keys: a finished tile is reused exactly when everything that shapes its pixels is unchanged.

The key of a tile hashes its window (with halo) on the run grid, the settings that change pixels,
the fitted pair model and only the scenes whose footprint touches the tile, so a new scene
invalidates the tiles it touches and no others (unless it changes the pair model, which every
tile applies). A run's keys are made together: what every tile shares is serialised once and each
footprint is projected once onto the run grid (not every tile outline to lon/lat).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
from odc.geo.geom import Geometry

from imagery.change import detector_params
from imagery.digests import json_digest, pixel_code_digest
from imagery.grid import Tile
from imagery.pipeline import PairModel, RunPlan
from imagery.sources.base import Scene

#: Settings that never change a tile's pixels (where things run and go, vector layers, credentials).
_NOT_PIXEL_SETTINGS = {
    "output_root", "cache_dir", "dask_address", "workers", "worker_memory", "keep_runs", "ledger_url",
    "layers", "sh_client_id", "sh_client_secret", "sh_base_url", "sh_token_url", "stac_url",
    "stac_collection", "sh_secret_block", "retry",
}  # fmt: skip


def touching(scenes: list[Scene], plan: RunPlan, tiles: list[Tile]) -> list[list[Scene]]:
    """For each tile, the scenes whose footprint meets the tile's padded window (on the run grid)."""
    gbox = plan.grid.geobox()
    outlines = np.array([t.padded(gbox, plan.halo)[0].extent.geom for t in tiles], dtype=object)
    hits = np.zeros((len(scenes), len(tiles)), bool)
    for i, scene in enumerate(scenes):
        footprint = Geometry(scene.footprint, crs="EPSG:4326").to_crs(plan.grid.crs, resolution="auto").geom
        shapely.prepare(footprint)
        hits[i] = shapely.intersects(footprint, outlines)
    return [[s for s, hit in zip(scenes, hits[:, j], strict=True) if hit] for j in range(len(tiles))]


def tile_keys(plan: RunPlan, model: PairModel) -> dict[str, str]:
    """A hex digest of every input of each tile of the plan, by tile name: what all tiles share
    (settings, detector, code, grid, pair model) is hashed once, then with each tile's window and
    the scenes that touch it."""
    tiles = plan.tiles()
    settings = plan.settings.model_dump(
        mode="json", exclude=_NOT_PIXEL_SETTINGS & set(type(plan.settings).model_fields)
    )
    shared = json_digest(
        {
            "code": pixel_code_digest(),
            "detector": detector_params(plan.settings.change).model_dump(mode="json"),
            "grid": plan.grid.model_dump(mode="json"),
            "model": model.model_dump(mode="json"),
            "settings": settings,
        }
    )
    scene = {id(s): json_digest(s.model_dump(mode="json")) for s in (*plan.before, *plan.after)}
    before, after = touching(plan.before, plan, tiles), touching(plan.after, plan, tiles)
    return {
        tile.name: json_digest(
            {
                "shared": shared,
                "tile": [tile.row0, tile.col0, tile.height, tile.width, plan.halo],
                "before": [scene[id(s)] for s in b],
                "after": [scene[id(s)] for s in a],
            }
        )
        for tile, b, a in zip(tiles, before, after, strict=True)
    }


def cached_tile_path(cache_dir: Path, tile: Tile, key: str) -> Path:
    """Where the tile with this key is cached."""
    return cache_dir / f"{tile.name}-{key[:24]}.tile"
