from __future__ import annotations

from pathlib import Path

import pytest

from imagery.runs import point_latest, prune_runs, run_dir, staging


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
