from __future__ import annotations

import numpy as np
import pandas as pd
from odc.geo.geobox import GeoBox

from imagery.hotspots import extract_hotspots
from imagery.priority_grid import GridStats, priority_grid


def test_cells_aggregate_man_made_change_on_a_fixed_lattice() -> None:
    # A 10 m grid whose corner is 250 m off the 500 m lattice: the lattice, not the grid, places cells.
    gbox = GeoBox.from_bbox((270_250, 8_660_000, 272_250, 8_662_000), "EPSG:32718", resolution=10)
    classes = np.zeros((200, 200), np.uint8)
    score = np.full((200, 200), 0.1, np.float32)
    classes[30:40, 30:40] = 1  # 1 ha of construction, x 270550..270650, y 8661600..8661700
    score[30:40, 30:40] = 0.9
    classes[30:35, 60:65] = 2  # 0.25 ha of clearing in the same cell (x 270850..270900)
    score[30:35, 60:65] = 0.6
    classes[150:160, 150:170] = 3  # 2 ha of demolition, another cell
    score[150:160, 150:170] = 0.7
    classes[100:110, 100:110] = 5  # vegetation gain: not aggregated
    classes[:, 25:30] = 255  # a no data strip (cloud) of 50 m x 2 km at x 270500..270550
    spots = extract_hotspots(classes, score, gbox, before_date=None, after_date=None)
    grid = priority_grid(classes, score, gbox, spots, cell_m=500)
    assert len(grid) == 2
    first, second = grid.iloc[0], grid.iloc[1]
    # score-weighted area: 2 ha x 0.7 = 14000 beats 1 ha x 0.9 + 0.25 ha x 0.6 = 10500
    assert first["changed_area_m2"] == 20_000 and first["hotspot_count"] == 1 and first["priority"] == 1
    assert second["changed_area_m2"] == 12_500 and second["hotspot_count"] == 2
    assert second["score_max"] == 0.9 and second["score_mean"] == round((90 + 15) / 125, 4)
    assert second["cell_id"] == "500m_E270500_N8661500"
    assert tuple(second.geometry.bounds) == (270_500, 8_661_500, 271_000, 8_662_000)
    # the no data strip covers a tenth of that cell
    assert second["valid_fraction"] == 0.9
    assert second["changed_share"] == round(12_500 / 225_000, 4)


def test_no_change_gives_an_empty_grid_with_its_columns() -> None:
    gbox = GeoBox.from_bbox((270_000, 8_660_000, 270_500, 8_660_500), "EPSG:32718", resolution=10)
    classes = np.zeros((50, 50), np.uint8)
    spots = extract_hotspots(classes, classes.astype(np.float32), gbox, before_date=None, after_date=None)
    grid = priority_grid(classes, classes.astype(np.float32), gbox, spots)
    assert grid.empty and "priority" in grid.columns and grid.crs.to_epsg() == 32718


def test_cell_sums_match_pandas_group_sums_per_strip_and_over_strips() -> None:
    # Scores of very different magnitudes, so that a plain running sum differs from pandas' compensated
    # one in the last bits; cells of 5 x 5 px cut by strips of 7 rows.
    gbox = GeoBox.from_bbox((270_000, 8_660_000, 270_400, 8_660_400), "EPSG:32718", resolution=10)
    rng = np.random.default_rng(5)
    classes = rng.choice(np.array([0, 1, 2, 3, 4, 255], np.uint8), size=(40, 40))
    score = (rng.random((40, 40)) * rng.choice([1.0, 1e-12, 3e-6], size=(40, 40))).astype(np.float32)
    score[rng.random((40, 40)) < 0.05] = np.nan
    stats, strips = GridStats(gbox, cell_m=50), []
    plain: dict[tuple[int, int], float] = {}
    for row0 in range(0, 40, 7):
        stats.add(row0, classes[row0 : row0 + 7], score[row0 : row0 + 7])
        rows, cols = np.nonzero(np.isin(classes[row0 : row0 + 7], (1, 2, 3)))
        values = np.nan_to_num(score[row0 + rows, cols]).astype(np.float64)
        # lattice index of the pixel centres: x from 270 000 m, y down from 8 660 400 m (rows of 50 m)
        pixels = pd.DataFrame({"i": 5400 + cols // 5, "j": 173_207 - (row0 + rows) // 5, "score": values})
        strips.append(pixels.groupby(["i", "j"]).agg(n=("score", "size"), s=("score", "sum")))
        for i, j, value in zip(pixels["i"], pixels["j"], values, strict=True):
            plain[i, j] = plain.get((i, j), 0.0) + value
    parts = pd.concat(strips)
    expected = parts.groupby(level=["i", "j"]).agg(n=("n", "sum"), s=("s", "sum"))
    got = stats.sums().set_index(["i", "j"]).sort_index()
    assert got.index.equals(expected.index) and len(got) == 64
    assert (got["changed_px"].to_numpy() == expected["n"].to_numpy()).all()
    assert (got["score_sum"].to_numpy() == expected["s"].to_numpy()).all()  # bit for bit
    # the data tells pandas' sums from plain running sums
    assert [plain[key] for key in expected.index] != expected["s"].tolist()
