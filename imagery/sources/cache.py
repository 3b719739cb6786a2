"""Downloaded tiles and bands on disk, addressed by what was asked for, written atomically.

An entry's name is the SHA-256 of its request (source, item, asset, grid window, ...), so the same
request always maps to the same file and a second run finds it without touching the network. A
lock file per entry keeps two processes from downloading the same thing twice; the payload is
written under a temporary name in the same folder, validated, then renamed, so a reader sees a
whole entry or none. Secrets never enter a key: callers pass only public request parts.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from imagery.errors import VigiaError
from imagery.sources.base import Scene

#: Days after its end a period is settled: catalogues have ingested its scenes, so a search result
#: for it may be cached; a more recent period is always asked afresh.
SETTLED_AFTER_DAYS = 10


class CorruptPayload(VigiaError):
    """A downloaded payload that is not what it claims to be (truncated, not a raster, wrong size)."""


def cache_key(parts: Mapping[str, Any]) -> str:
    """SHA-256 of the request parts as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def validate_raster(path: Path, *, shape: tuple[int, int] | None = None) -> None:
    """Raise CorruptPayload unless `path` opens with GDAL and every pixel decodes (and the shape fits)."""
    if path.stat().st_size == 0:
        raise CorruptPayload(f"{path.name}: empty payload")
    try:
        with rasterio.open(path) as src:
            if shape is not None and (src.height, src.width) != shape:
                raise CorruptPayload(
                    f"{path.name}: {src.height}x{src.width} px, expected {shape[0]}x{shape[1]}"
                )
            for _, window in src.block_windows(1):
                src.read(window=window)
    except RasterioError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptPayload(f"{path.name}: not a readable raster ({first})") from None


class FetchCache:
    """A folder of cached downloads: `root/ab/abcdef....ext`, one file per request."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, key: str, suffix: str = ".tif") -> Path:
        """Where the entry for `key` lives (whether or not it exists yet)."""
        return self.root / key[:2] / f"{key}{suffix}"

    def get(self, parts: Mapping[str, Any], suffix: str = ".tif") -> Path | None:
        """The cached file for a request, or None."""
        path = self.path_for(cache_key(parts), suffix)
        return path if path.is_file() else None

    def get_or_fetch(
        self,
        parts: Mapping[str, Any],
        fetch: Callable[[Path], None],
        validate: Callable[[Path], None] = validate_raster,
        suffix: str = ".tif",
    ) -> Path:
        """The cached file for a request; on a miss `fetch` writes it to a temp path, `validate` checks it.

        `fetch` and `validate` may raise; then nothing is cached and the temp file is removed.
        """
        final = self.path_for(cache_key(parts), suffix)
        if final.is_file():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with _locked(final.with_suffix(".lock")):
            if final.is_file():  # another process fetched it while we waited
                return final
            tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp{suffix}")
            try:
                fetch(tmp)
                validate(tmp)
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
        return final

    def entries(self) -> Iterator[Path]:
        """Every complete entry (temp files and locks excluded)."""
        for path in self.root.glob("??/*"):
            if not path.name.startswith(".") and path.suffix != ".lock":
                yield path


def search_settled(
    cache: FetchCache, parts: Mapping[str, Any], end: date, search: Callable[[], list[Scene]]
) -> list[Scene]:
    """`search()`, answered from the cache when the period ended more than SETTLED_AFTER_DAYS ago."""
    if (date.today() - end).days <= SETTLED_AFTER_DAYS:
        return search()

    def fetch(tmp: Path) -> None:
        tmp.write_text(json.dumps([s.model_dump(mode="json") for s in search()]))

    path = cache.get_or_fetch({**parts, "end": end.isoformat()}, fetch, validate=_scene_list, suffix=".json")
    return [Scene.model_validate(doc) for doc in json.loads(path.read_text())]


def _scene_list(path: Path) -> None:
    """Raise unless `path` holds a JSON list of scenes (a cached search result)."""
    try:
        for doc in json.loads(path.read_text()):
            Scene.model_validate(doc)
    except (ValueError, TypeError) as exc:
        raise CorruptPayload(f"{path.name}: not a cached scene list ({exc})") from None


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_array_tif(path: Path, array: np.ndarray, profile: Mapping[str, Any]) -> None:
    """One band written as a deflate GeoTIFF (the form tile/band cache entries take)."""
    meta = {
        **profile,
        "driver": "GTiff",
        "count": 1,
        "dtype": array.dtype.name,
        "height": array.shape[0],
        "width": array.shape[1],
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(array, 1)
