from __future__ import annotations

from datetime import date
from pathlib import Path

from imagery.ledger import Ledger, TileRecord, hotspot_sightings, hotspots, ledger_url, run_tiles, runs


def _spot(hid: str, seen: str) -> dict[str, object]:
    return {"id": hid, "change_type": "new construction / built-up gain", "after_date": seen,
            "area_m2": 2500.0, "score_max": 0.9}  # fmt: skip


def test_default_ledger_is_a_sqlite_file_under_the_output_root(tmp_path: Path) -> None:
    url = ledger_url(tmp_path / "out")
    Ledger(url).close()
    assert url == f"sqlite:///{(tmp_path / 'out' / 'ledger.sqlite').resolve()}"
    assert (tmp_path / "out" / "ledger.sqlite").stat().st_size > 0
    assert ledger_url(tmp_path, "postgresql+psycopg://db/vigia") == "postgresql+psycopg://db/vigia"


def test_rerun_of_a_date_records_no_duplicate_hotspots(tmp_path: Path) -> None:
    ledger = Ledger(ledger_url(tmp_path))
    for _ in range(2):
        run = ledger.start_run("lima", "2022-02-18")
        ledger.record_hotspots(
            "lima", "2022-02-18", [_spot("VG-a", "2022-02-17"), _spot("VG-b", "2022-02-17")]
        )
        ledger.record_tiles(run, [TileRecord("r000c000", "k1", "/x.npz", reused=False)])
        ledger.record_tiles(run, [TileRecord("r000c000", "k1", "/x.npz", reused=True)])
        ledger.finish_run(run, "completed", "/out/lima/2022-02-18")
    assert len(ledger.rows(hotspot_sightings)) == 2
    assert sorted(r["hotspot_id"] for r in ledger.rows(hotspots)) == ["VG-a", "VG-b"]
    assert [r["status"] for r in ledger.rows(runs)] == ["completed", "completed"]
    assert len(ledger.rows(run_tiles, run_id=2)) == 1


def test_first_and_last_seen_span_dates_and_exclude_the_date_being_rerun(tmp_path: Path) -> None:
    ledger = Ledger(ledger_url(tmp_path))
    ledger.record_hotspots("lima", "2022-02-18", [_spot("VG-a", "2022-02-17")])
    ledger.record_hotspots("lima", "2022-03-20", [_spot("VG-a", "2022-03-15"), _spot("VG-c", "2022-03-15")])
    ledger.record_hotspots("callao", "2022-03-20", [_spot("VG-a", "2022-03-15")])
    lima = {r["hotspot_id"]: r for r in ledger.rows(hotspots, aoi="lima")}
    assert (lima["VG-a"]["first_seen"], lima["VG-a"]["last_seen"], lima["VG-a"]["sightings"]) == (
        "2022-02-17", "2022-03-15", 2,
    )  # fmt: skip
    assert ledger.seen_before("lima", "2022-03-20") == {"VG-a": (date(2022, 2, 17), date(2022, 2, 17))}
    # a later rerun of 2022-03-20 that no longer sees VG-c drops its only sighting
    ledger.record_hotspots("lima", "2022-03-20", [_spot("VG-a", "2022-03-15")])
    assert sorted(r["hotspot_id"] for r in ledger.rows(hotspots, aoi="lima")) == ["VG-a"]


def test_tile_files_of_completed_runs_of_given_dates(tmp_path: Path) -> None:
    ledger = Ledger(ledger_url(tmp_path))
    for day, status, path in (("2022-02-17", "completed", "/a.npz"), ("2022-02-18", "completed", "/b.npz"),
                              ("2022-02-18", "failed", "/c.npz")):  # fmt: skip
        run = ledger.start_run("lima", day)
        ledger.record_tiles(run, [TileRecord("r000c000", "k", path, reused=False)])
        ledger.finish_run(run, status)
    assert ledger.tile_files("lima", ["2022-02-18"]) == {Path("/b.npz")}
    assert ledger.tile_files("lima", ["2022-02-17", "2022-02-18"]) == {Path("/a.npz"), Path("/b.npz")}
