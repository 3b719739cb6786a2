"""Run folders: OUTPUT/<aoi>/<run-date>/ appear complete or not at all; `latest` points to the newest."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path


def run_dir(output_root: Path, aoi: str, run_date: str) -> Path:
    """Where a run is published."""
    return output_root / aoi / run_date


def work_dir(output_root: Path, aoi: str, run_date: str) -> Path:
    """Where a run keeps finished tiles until it is published (reused after a crash)."""
    return output_root / aoi / ".work" / run_date


@contextlib.contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A hidden folder beside `final`; on success it replaces `final` by rename, else vanishes."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; readers (QGIS, notebooks) need to list it
        if final.exists() and exchange(tmp, final):
            return  # tmp now holds the previous run, removed below
        old = None
        if final.exists():  # no atomic exchange here: a moment without `final`, never a partial one
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE), so a rerun
    replaces a published folder without a moment where it is missing. False where unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return bool(renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0)


def point_latest(final: Path) -> Path:
    """Atomically repoint `<aoi>/latest` to the run folder `final` (relative symlink)."""
    link = final.parent / "latest"
    tmp = final.parent / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(final.name, target_is_directory=True)
    os.replace(tmp, link)
    return link


def prune_runs(aoi_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` run folders (YYYY-MM-DD) of an AOI; never the one `latest`
    points to. `keep` 0 keeps everything. Returns the folders removed."""
    if keep <= 0 or not aoi_dir.is_dir():
        return []
    latest = (aoi_dir / "latest").resolve() if (aoi_dir / "latest").is_symlink() else None
    dated = sorted(p for p in aoi_dir.iterdir() if p.is_dir() and not p.is_symlink() and _is_date(p.name))
    removed = []
    for old in dated[:-keep]:
        if old.resolve() == latest:
            continue
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    return removed


def _is_date(name: str) -> bool:
    try:
        date.fromisoformat(name)
    except ValueError:
        return False
    return len(name) == 10


def tile_cache_dir(output_root: Path, aoi: str) -> Path:
    """Finished tiles of an AOI keyed on their inputs, shared by all runs (see tilecache)."""
    return output_root / aoi / ".tiles"


def prune_tile_cache(cache_dir: Path, keep: set[Path], older_than_s: float = 3600.0) -> list[Path]:
    """Delete cached tiles (and temporary files a crash left) not in `keep` and untouched for
    `older_than_s` (so a run working at the same time never loses its tiles)."""
    if not cache_dir.is_dir():
        return []
    keep = {p.resolve() for p in keep}
    cutoff = time.time() - older_than_s
    removed = []
    for path in cache_dir.iterdir():
        if path.is_file() and path.resolve() not in keep and path.stat().st_mtime <= cutoff:
            path.unlink(missing_ok=True)
            removed.append(path)
    return sorted(removed)
