from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
from odc.geo.geobox import GeoBox
from pyproj import Transformer

from imagery.districts import load_districts
from imagery.hotspots import attribute_districts, extract_hotspots, mark_history, remove_small_patches

TO_UTM = Transformer.from_crs(4326, 32718, always_xy=True)


def _grid_around(lon: float, lat: float, size: int = 400) -> GeoBox:
    x, y = TO_UTM.transform(lon, lat)
    x0, y0 = round(x / 10) * 10 - size * 5, round(y / 10) * 10 + size * 5
    return GeoBox.from_bbox((x0, y0 - size * 10, x0 + size * 10, y0), "EPSG:32718", resolution=10)


def test_patches_become_ranked_polygons_with_attributes() -> None:
    gbox = _grid_around(-77.03, -12.12)
    classes = np.zeros((400, 400), np.uint8)
    classes[10:20, 10:20] = 1  # 100 px = 1 ha
    classes[100:130, 200:240] = 3  # 1200 px = 12 ha
    classes[300:302, 300:302] = 2  # 4 px: below the 0.2 ha minimum mapping unit
    classes[350:360, 350:360] = 5  # vegetation gain: never a hotspot
    score = np.where(classes > 0, 0.9, 0.1).astype(np.float32)
    remove_small_patches(classes, 20)
    assert classes[300, 300] == 0 and classes[15, 15] == 1
    spots = extract_hotspots(classes, score, gbox, before_date=date(2025, 1, 1), after_date=date(2026, 1, 1))
    assert len(spots) == 2
    assert spots["priority"].tolist() == [1, 2]
    assert spots.iloc[0]["change_type"] == "demolition / built-up loss"
    assert spots.iloc[0]["area_m2"] == 120_000 and spots.iloc[1]["area_m2"] == 10_000
    assert spots.iloc[0]["confidence"] == "high" and spots.iloc[0]["status"] == "new"
    assert spots.geometry.area.round().tolist() == [120_000, 10_000]
    again = extract_hotspots(classes, score, gbox, before_date=None, after_date=None)
    assert sorted(again["id"]) == sorted(spots["id"])  # ids are stable across runs


def test_districts_are_attributed_on_known_places(peru: Path) -> None:
    districts = load_districts(peru / "lima_callao_districts.geojson")
    for lon, lat, name, ubigeo in [
        (-77.0300, -12.1210, "MIRAFLORES", "150122"),  # Parque Kennedy
        (-76.9950, -11.9800, "SAN JUAN DE LURIGANCHO", "150132"),
        (-77.1400, -12.0580, "CALLAO", "070101"),  # La Punta / Chucuito side of Callao
        (-77.0300, -12.0464, "LIMA", "150101"),  # Plaza de Armas
        (-77.0365, -12.0985, "SAN ISIDRO", "150131"),  # Parque El Olivar
        (-77.1143, -12.0219, "CALLAO", "070101"),  # Jorge Chávez airport
        (-77.0217, -12.1490, "BARRANCO", "150104"),  # Plaza de Barranco
        (-76.9740, -12.0850, "SANTIAGO DE SURCO", "150140"),  # Jockey Plaza
        (-77.0600, -12.0070, "INDEPENDENCIA", "150112"),  # Plaza Norte
    ]:
        gbox = _grid_around(lon, lat, size=40)
        classes = np.zeros((40, 40), np.uint8)
        classes[15:25, 15:25] = 1
        spots = extract_hotspots(classes, classes.astype(np.float32), gbox, before_date=None, after_date=None)
        spots = attribute_districts(spots, districts)
        assert spots.iloc[0]["district"] == name, (lon, lat)
        assert spots.iloc[0]["ubigeo"] == ubigeo


def test_history_from_earlier_runs_marks_recurring_hotspots() -> None:
    gbox = _grid_around(-77.03, -12.12, size=100)
    classes = np.zeros((100, 100), np.uint8)
    classes[10:20, 10:20] = 1
    classes[60:70, 60:70] = 2
    spots = extract_hotspots(classes, classes.astype(np.float32) / 2, gbox, before_date=date(2025, 1, 1),
                             after_date=date(2026, 1, 10))  # fmt: skip
    old, new = spots["id"].tolist()
    marked = mark_history(
        spots, {old: (date(2025, 6, 1), date(2025, 12, 1)), "VG-elsewhere": (date(2025, 1, 1),) * 2}
    )
    rows = marked.set_index("id")
    assert rows.loc[old, ["first_seen", "last_seen", "status"]].tolist() == [
        "2025-06-01",
        "2026-01-10",
        "recurring",
    ]
    assert rows.loc[new, ["first_seen", "last_seen", "status"]].tolist() == [
        "2026-01-10",
        "2026-01-10",
        "new",
    ]
    # a backfill of an older date keeps the later sighting as last_seen
    back = extract_hotspots(classes, classes.astype(np.float32) / 2, gbox, before_date=None,
                            after_date=date(2025, 3, 1))  # fmt: skip
    rows = mark_history(back, {old: (date(2025, 6, 1), date(2025, 12, 1))}).set_index("id")
    assert rows.loc[old, ["first_seen", "last_seen"]].tolist() == ["2025-03-01", "2025-12-01"]
    assert mark_history(spots, None).equals(spots)
