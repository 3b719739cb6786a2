"""The scenes of a period as table rows for people: same-day scenes grouped as the one look they make."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from imagery.sources.base import Scene


def same_day_groups(scenes: Sequence[Scene]) -> dict[date, list[Scene]]:
    """Scenes by acquisition day: overlapping granules of one day are merged into a single look
    (`composite.median_composite` with the day of each look), never counted twice."""
    groups: dict[date, list[Scene]] = {}
    for scene in sorted(scenes, key=lambda s: (s.acquired, s.id)):
        groups.setdefault(scene.acquired, []).append(scene)
    return groups


def period_rows(scenes: Sequence[Scene]) -> list[tuple[str, str, str, str, str, str]]:
    """(date, scene id, cloud %, baseline, DN offset, merged-with) per scene, oldest first."""
    rows = []
    for day, group in same_day_groups(scenes).items():
        for scene in group:
            others = [s.id for s in group if s is not scene]
            rows.append((
                day.isoformat(), scene.id,
                "-" if scene.cloud_cover is None else f"{scene.cloud_cover:.1f}",
                scene.processing_baseline or "-", f"{scene.boa_offset:+.0f}",
                f"one look with {', '.join(others)}" if others else "",
            ))  # fmt: skip
    return rows
