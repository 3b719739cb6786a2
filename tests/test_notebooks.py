"""The analysts' notebooks: committed without outputs, and executed top to bottom against the
shared demo run (so they never rot)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))


def execute(name: str) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel from the notebooks folder (env vars reach the kernel)."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return book


def outputs_text(book: nbformat.NotebookNode) -> str:
    parts = []
    for cell in book.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(parts)


def test_notebooks_are_committed_clean() -> None:
    assert {p.name for p in ALL} == {"explore_latest_run.ipynb", "compare_runs.ipynb"}
    for path in ALL:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        for cell in book.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs committed"


@pytest.mark.slow
def test_explore_latest_run_executes(demo_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIA_RUN", str(demo_run[0] / "lima_callao" / "latest"))
    text = outputs_text(execute("explore_latest_run.ipynb"))
    assert "hotspots pass the filters" in text and "leaflet" in text.lower()  # the interactive map rendered


@pytest.mark.slow
def test_compare_runs_executes_with_one_run_and_with_history(
    demo_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIA_OUTPUT_ROOT", str(demo_run[0]))
    assert "1 run(s) of lima_callao" in outputs_text(execute("compare_runs.ipynb"))
    # A second night that published the same layers: every hotspot is then recurring.
    root = tmp_path / "output"
    shutil.copytree(demo_run[1], root / "lima_callao" / "2022-01-18")
    shutil.copytree(demo_run[1], root / "lima_callao" / demo_run[1].name)
    monkeypatch.setenv("VIGIA_OUTPUT_ROOT", str(root))
    text = outputs_text(execute("compare_runs.ipynb"))
    assert "2 run(s) of lima_callao: 2022-01-18, 2022-02-18" in text
    n = len(json.loads((demo_run[1] / "hotspots.geojson").read_text())["features"])
    # run, hotspots, new, recurring, gone: the second night finds only recurring hotspots
    assert re.search(rf"2022-01-18\s+{n}\s+{n}\s+0\s+0\s*\n2022-02-18\s+{n}\s+0\s+{n}\s+0", text), text[
        -3000:
    ]
