"""The run ledger: what each run used and produced, and every hotspot's first and last sighting.

SQLAlchemy Core on an embedded SQLite file under the output root by default; any SQLAlchemy URL
(e.g. postgresql+psycopg://...) works. Every write is an upsert on a natural key, so rerunning a
date records nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    func,
    select,
)
from sqlalchemy.engine import Connection

from imagery.sources.base import Scene

LEDGER_FILE = "ledger.sqlite"

metadata = MetaData()

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("aoi", String, nullable=False),
    Column("run_date", String, nullable=False),
    Column("status", String, nullable=False),  # running / completed / failed
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("published", String),
    Column("flow_run_id", String),
)  # fmt: skip

run_scenes = Table(
    "run_scenes", metadata,
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("period", String, nullable=False),
    Column("scene_id", String, nullable=False),
    Column("acquired", String, nullable=False),
    Column("source", String, nullable=False),
    UniqueConstraint("run_id", "period", "scene_id"),
)  # fmt: skip

run_tiles = Table(
    "run_tiles", metadata,
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("tile", String, nullable=False),
    Column("cache_key", String, nullable=False),
    Column("path", String, nullable=False),
    Column("reused", Boolean, nullable=False),
    UniqueConstraint("run_id", "tile"),
)  # fmt: skip

run_outputs = Table(
    "run_outputs", metadata,
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("name", String, nullable=False),
    Column("path", String, nullable=False),
    Column("bytes", Integer, nullable=False),
    UniqueConstraint("run_id", "name"),
)  # fmt: skip

hotspot_sightings = Table(
    "hotspot_sightings", metadata,
    Column("aoi", String, nullable=False),
    Column("hotspot_id", String, nullable=False),
    Column("run_date", String, nullable=False),
    Column("seen_date", String, nullable=False),
    Column("change_type", String, nullable=False),
    Column("area_m2", Float, nullable=False),
    Column("score_max", Float, nullable=False),
    UniqueConstraint("aoi", "hotspot_id", "run_date"),
)  # fmt: skip

hotspots = Table(
    "hotspots", metadata,
    Column("aoi", String, nullable=False),
    Column("hotspot_id", String, nullable=False),
    Column("change_type", String, nullable=False),
    Column("first_seen", String, nullable=False),
    Column("last_seen", String, nullable=False),
    Column("sightings", Integer, nullable=False),
    UniqueConstraint("aoi", "hotspot_id"),
)  # fmt: skip


@dataclass(frozen=True)
class TileRecord:
    """One tile of a run: its cache key, file and whether it was reused from an earlier run."""

    tile: str
    cache_key: str
    path: str
    reused: bool


def ledger_url(output_root: Path, url: str | None = None) -> str:
    """The ledger's SQLAlchemy URL: `url` when given, else a SQLite file under the output root."""
    if url:
        return url
    output_root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(output_root / LEDGER_FILE).resolve()}"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Ledger:
    """Read and write the run ledger."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)
        metadata.create_all(self.engine)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def start_run(self, aoi: str, run_date: str, flow_run_id: str | None = None) -> int:
        """A new run row in state `running`; returns its id."""
        with self.engine.begin() as conn:
            result = conn.execute(
                runs.insert().values(
                    aoi=aoi, run_date=run_date, status="running", started_at=_now(), flow_run_id=flow_run_id
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def finish_run(self, run_id: int, status: str, published: str | None = None) -> None:
        """Mark a run completed or failed."""
        with self.engine.begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(status=status, finished_at=_now(), published=published)
            )

    def record_scenes(self, run_id: int, periods: Mapping[str, Iterable[Scene]]) -> None:
        """The scenes used per period."""
        rows = [
            {"run_id": run_id, "period": period, "scene_id": s.id, "acquired": s.acquired.isoformat(),
             "source": s.source}
            for period, scenes in periods.items()
            for s in scenes
        ]  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(run_scenes.delete().where(run_scenes.c.run_id == run_id))
            if rows:
                conn.execute(run_scenes.insert(), rows)

    def record_tiles(self, run_id: int, tiles: Iterable[TileRecord]) -> None:
        """The tiles a run finished, with their cache keys."""
        rows = [{"run_id": run_id, **t.__dict__} for t in tiles]
        with self.engine.begin() as conn:
            conn.execute(run_tiles.delete().where(run_tiles.c.run_id == run_id))
            if rows:
                conn.execute(run_tiles.insert(), rows)

    def record_outputs(self, run_id: int, outputs: Mapping[str, Path]) -> None:
        """The files a run published."""
        rows = [
            {"run_id": run_id, "name": name, "path": str(path), "bytes": Path(path).stat().st_size}
            for name, path in outputs.items()
        ]
        with self.engine.begin() as conn:
            conn.execute(run_outputs.delete().where(run_outputs.c.run_id == run_id))
            if rows:
                conn.execute(run_outputs.insert(), rows)

    def record_hotspots(self, aoi: str, run_date: str, found: Iterable[Mapping[str, Any]]) -> None:
        """This run date's hotspots (properties of hotspots.geojson); replaces an earlier run of the
        same date, then refreshes first/last seen of every hotspot involved."""
        rows = [
            {"aoi": aoi, "hotspot_id": h["id"], "run_date": run_date,
             "seen_date": h.get("after_date") or run_date, "change_type": h["change_type"],
             "area_m2": float(h["area_m2"]), "score_max": float(h["score_max"])}
            for h in found
        ]  # fmt: skip
        with self.engine.begin() as conn:
            same_date = (hotspot_sightings.c.aoi == aoi) & (hotspot_sightings.c.run_date == run_date)
            ids = {r["hotspot_id"] for r in rows}
            ids |= set(conn.scalars(select(hotspot_sightings.c.hotspot_id).where(same_date)))
            conn.execute(hotspot_sightings.delete().where(same_date))
            if rows:
                conn.execute(hotspot_sightings.insert(), rows)
            for hid in sorted(ids):
                _refresh_hotspot(conn, aoi, hid)

    def seen_before(self, aoi: str, run_date: str) -> dict[str, tuple[date, date]]:
        """Hotspot id -> (first, last) sighting in runs of other dates (so a rerun of a date
        sees exactly what its first run saw)."""
        sightings = hotspot_sightings.c
        query = (
            select(sightings.hotspot_id, func.min(sightings.seen_date), func.max(sightings.seen_date))
            .where((sightings.aoi == aoi) & (sightings.run_date != run_date))
            .group_by(sightings.hotspot_id)
        )
        with self.engine.connect() as conn:
            return {
                hid: (date.fromisoformat(first), date.fromisoformat(last))
                for hid, first, last in conn.execute(query)
            }

    def tile_files(self, aoi: str, run_dates: Iterable[str]) -> set[Path]:
        """Tile files used by completed runs of these dates (what the tile cache must keep)."""
        query = (
            select(run_tiles.c.path)
            .join(runs, runs.c.id == run_tiles.c.run_id)
            .where(
                (runs.c.aoi == aoi) & (runs.c.status == "completed") & runs.c.run_date.in_(list(run_dates))
            )
        )
        with self.engine.connect() as conn:
            return {Path(p) for p in conn.scalars(query)}

    def rows(self, table: Table, **where: Any) -> list[dict[str, Any]]:
        """All rows of a ledger table matching column=value filters (for reports and tests)."""
        query = select(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]


def _refresh_hotspot(conn: Connection, aoi: str, hotspot_id: str) -> None:
    """Recompute one hotspot's summary row from its sightings (removed when none are left)."""
    s = hotspot_sightings.c
    first, last, count, kind = conn.execute(
        select(func.min(s.seen_date), func.max(s.seen_date), func.count(), func.max(s.change_type)).where(
            (s.aoi == aoi) & (s.hotspot_id == hotspot_id)
        )
    ).one()
    key = (hotspots.c.aoi == aoi) & (hotspots.c.hotspot_id == hotspot_id)
    conn.execute(hotspots.delete().where(key))
    if count:
        conn.execute(
            hotspots.insert().values(
                aoi=aoi,
                hotspot_id=hotspot_id,
                change_type=kind,
                first_seen=first,
                last_seen=last,
                sightings=count,
            )
        )
