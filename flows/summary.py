"""What the run's Prefect artifacts say, built from the published files (run.json, hotspots.geojson)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

TOP_HOTSPOTS = 10


def hotspot_properties(run_folder: Path) -> list[dict[str, Any]]:
    """Attributes of every published hotspot, in priority order."""
    features = json.loads((run_folder / "hotspots.geojson").read_text())["features"]
    return sorted((f["properties"] for f in features), key=lambda p: p["priority"])


def summary_markdown(run_folder: Path, tiles_reused: int, tiles_total: int) -> str:
    """Scenes, coverage, co-registration quality and hotspots by district and type, as markdown."""
    meta = json.loads((run_folder / "run.json").read_text())
    props = hotspot_properties(run_folder)
    lines = [f"# Vigía run {meta['aoi']} {run_folder.name}", "", f"Published: `{run_folder}`", ""]
    lines += ["## Scenes", "", "| period | scene | date | cloud mask | cloud % |", "|---|---|---|---|---|"]
    for period, scenes in meta["scenes"].items():
        for s in scenes:
            cloud = "" if s["cloud_cover"] is None else f"{s['cloud_cover']:.0f}"
            lines.append(
                f"| {period} | {s['id']} | {s['date']} | {'yes' if s['cloud_mask'] else 'no'} | {cloud} |"
            )
    cov = meta["coverage"]
    lines += [
        "", "## Coverage", "",
        f"- valid pixels: {100 * cov['valid_fraction']:.1f} % of {cov['pixels']}",
        f"- mean valid looks: before {cov['mean_valid_looks_before']}, after {cov['mean_valid_looks_after']}",
        f"- tiles: {tiles_total} ({tiles_reused} reused from earlier runs)",
    ]  # fmt: skip
    lines += ["", "## Co-registration", "", *_coregistration_lines(meta["coregistration"])]
    lines += ["", f"## Hotspots ({len(props)})", ""]
    if props:
        lines += ["| district | type | count | area (ha) |", "|---|---|---|---|"]
        count: Counter[tuple[str, str]] = Counter()
        area: dict[tuple[str, str], float] = defaultdict(float)
        for p in props:
            key = (p.get("district") or "(no district)", p["change_type"])
            count[key] += 1
            area[key] += p["area_m2"]
        for key in sorted(count, key=lambda k: -area[k]):
            lines.append(f"| {key[0]} | {key[1]} | {count[key]} | {area[key] / 10_000:.2f} |")
    for note in meta.get("notes", []):
        lines.append(f"\n> note: {note}")
    return "\n".join(lines) + "\n"


def _coregistration_lines(coreg: dict[str, Any]) -> list[str]:
    quality = coreg.get("summary", coreg)
    return [f"- {key}: {value:.3f}" if isinstance(value, float) else f"- {key}: {value}"
            for key, value in quality.items()]  # fmt: skip


def top_hotspots_table(run_folder: Path, n: int = TOP_HOTSPOTS) -> list[dict[str, Any]]:
    """The `n` highest-priority hotspots, with the columns a patrol planner reads first."""
    columns = ("priority", "id", "change_type", "area_m2", "score_mean", "confidence", "district",
               "centroid_lat", "centroid_lon", "first_seen", "status")  # fmt: skip
    return [{c: p.get(c) for c in columns} for p in hotspot_properties(run_folder)[:n]]
