"""Run folders: OUTPUT/<aoi>/<run-date>/ appear complete or not at all; `latest` points to the newest."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
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
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def point_latest(final: Path) -> Path:
    """Atomically repoint `<aoi>/latest` to the run folder `final` (relative symlink)."""
    link = final.parent / "latest"
    tmp = final.parent / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(final.name, target_is_directory=True)
    os.replace(tmp, link)
    return link
