from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imagery.runs import exchange, point_latest, prune_runs, prune_tile_cache, run_dir, staging


def _publish(root: Path, day: str) -> Path:
    final = run_dir(root, "lima", day)
    with staging(final) as tmp:
        (tmp / "run.json").write_text("{}")
    point_latest(final)
    return final


def test_staging_publishes_a_readable_folder_or_nothing(tmp_path: Path) -> None:
    final = _publish(tmp_path, "2022-02-18")
    assert (final / "run.json").exists() and final.stat().st_mode & 0o755 == 0o755
    with pytest.raises(RuntimeError), staging(run_dir(tmp_path, "lima", "2022-02-19")) as tmp:
        (tmp / "run.json").write_text("{")
        raise RuntimeError("crash while writing")
    assert sorted(p.name for p in (tmp_path / "lima").iterdir()) == ["2022-02-18", "latest"]


def test_retention_keeps_the_newest_runs_and_never_latest(tmp_path: Path) -> None:
    for day in ("2022-02-16", "2022-02-17", "2022-02-18", "2022-02-19"):
        _publish(tmp_path, day)
    point_latest(run_dir(tmp_path, "lima", "2022-02-16"))  # e.g. a backfill published last
    (tmp_path / "lima" / ".tiles").mkdir()
    assert prune_runs(tmp_path / "lima", 0) == []
    removed = prune_runs(tmp_path / "lima", 2)
    assert [p.name for p in removed] == ["2022-02-17"]
    assert sorted(p.name for p in (tmp_path / "lima").iterdir()) == [
        ".tiles", "2022-02-16", "2022-02-18", "2022-02-19", "latest",
    ]  # fmt: skip


def test_rerun_swaps_the_published_folder_in_one_step(tmp_path: Path) -> None:
    first = _publish(tmp_path, "2022-02-18")
    inode = first.stat().st_ino
    with staging(first) as tmp:
        (tmp / "run.json").write_text('{"rerun": true}')
        assert exchange_supported(tmp_path)
    assert (first / "run.json").read_text() == '{"rerun": true}'
    assert first.stat().st_ino != inode
    assert sorted(p.name for p in (tmp_path / "lima").iterdir()) == ["2022-02-18", "latest"]


def exchange_supported(folder: Path) -> bool:
    a, b = folder / "xa", folder / "xb"
    a.mkdir(), b.mkdir()
    (a / "in-a").touch()
    swapped = exchange(a, b) and (b / "in-a").exists() and not (a / "in-a").exists()
    shutil.rmtree(a), shutil.rmtree(b)
    return swapped


def test_tile_cache_pruning_keeps_what_kept_runs_use(tmp_path: Path) -> None:
    cache = tmp_path / ".tiles"
    cache.mkdir()
    used, stale, leftover = cache / "r0c0-a.npz", cache / "r0c0-b.npz", cache / ".r0c0-c.npz.x.tmp"
    for path in (used, stale, leftover):
        path.write_bytes(b"x")
    assert prune_tile_cache(cache, {used}, older_than_s=3600) == []  # too fresh: maybe a running run's
    assert prune_tile_cache(cache, {used}, older_than_s=0) == sorted([stale, leftover])
    assert [p.name for p in cache.iterdir()] == [used.name]
