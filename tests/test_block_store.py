"""Windows assembled from decoded blocks equal GDAL's windowed reads, and tiles laid out on the
block grid decode every block once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from imagery.grid import tile_anchor, tiles
from imagery.sources import raster
from imagery.sources.block_store import DecodedBlocks
from imagery.sources.raster import block_grid
from tests.scenes import UTM_ORIGIN, write_band

GRID = Affine(10.0, 0, UTM_ORIGIN[0], 0, -10.0, UTM_ORIGIN[1])
BLOCK = 64


@pytest.fixture
def tiled_file(tmp_path: Path) -> Path:
    """A 300 x 260 uint16 band in 64 px blocks (the last row and column of blocks partial)."""
    data = np.random.default_rng(5).integers(1, 60000, (300, 260)).astype(np.uint16)
    return write_band(tmp_path / "T_B02.tif", data, GRID, block_px=BLOCK)


def test_windows_equal_gdal_reads(tiled_file: Path) -> None:
    blocks = DecodedBlocks(
        whole_bytes=3 * BLOCK * BLOCK * 2,
        bottom_bytes=4 * 8 * BLOCK * 2,
        right_bytes=2 * 8 * BLOCK * 2,
        edge_px=8,
    )
    rng = np.random.default_rng(1)
    with rasterio.open(tiled_file) as src:
        for _ in range(200):
            r0, c0 = int(rng.integers(0, 300)), int(rng.integers(0, 260))
            window = Window(c0, r0, int(rng.integers(1, 261 - c0)), int(rng.integers(1, 301 - r0)))
            np.testing.assert_array_equal(blocks.read(src, "f", 1, window), src.read(1, window=window))
        with pytest.raises(ValueError, match="not inside"):
            blocks.read(src, "f", 1, Window(250, 0, 20, 10))


def test_reads_into_earlier_blocks_come_from_their_edges(tiled_file: Path) -> None:
    blocks = DecodedBlocks(whole_bytes=0, edge_px=8)  # no whole blocks kept: only edges
    with rasterio.open(tiled_file) as src:
        blocks.read(src, "f", 1, Window(0, 0, 128, 128))  # one tile: 2 x 2 blocks
        assert blocks.decoded == 4
        right = Window(128 - 8, 0, 8 + 64, 128)  # the next tile, its halo 8 px into the first
        np.testing.assert_array_equal(blocks.read(src, "f", 1, right), src.read(1, window=right))
        assert blocks.decoded == 4 + 2
        below = Window(0, 128 - 8, 128, 64 + 8)
        np.testing.assert_array_equal(blocks.read(src, "f", 1, below), src.read(1, window=below))
        assert blocks.decoded == 6 + 2
        deeper = Window(0, 128 - 9, 10, 9)  # 9 rows into the block above: more than its edge
        np.testing.assert_array_equal(blocks.read(src, "f", 1, deeper), src.read(1, window=deeper))
        assert blocks.decoded == 8 + 1
        blocks.read(src, "other version", 1, Window(0, 0, 10, 10))  # another file key: its own blocks
        assert blocks.decoded == 10


def test_tiles_on_the_block_grid_decode_each_block_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 20 m band (bilinear, one file pixel beyond each window) under 10 m tiles anchored on its
    blocks, read row by row as a run does: every block decoded once, the values GDAL's."""
    data = np.random.default_rng(2).integers(1, 60000, (160, 200)).astype(np.uint16)
    offset = (22, 38)  # the run grid starts inside the file, not on a block edge
    path = write_band(tmp_path / "T_B11_20m.tif", data, GRID * Affine.scale(2), block_px=BLOCK)
    run = GeoBox((300, 340), GRID * Affine.translation(offset[1], offset[0]), "EPSG:32718")
    grid = block_grid(str(path), run)
    assert grid == (128, 128, (-offset[0]) % 128, (-offset[1]) % 128)
    halo = 5
    anchor = tile_anchor([grid], 256, halo + 1)
    store = DecodedBlocks(whole_bytes=0)  # no whole blocks kept between reads: only edges
    monkeypatch.setattr(raster, "DECODED_BLOCKS", store)
    layout = tiles(run, 256, anchor)
    for tile in layout:
        padded, _, _ = tile.padded(run, halo)
        with rasterio.open(path) as src, WarpedVRT(
            src, crs="EPSG:32718", transform=padded.affine, width=padded.shape.x, height=padded.shape.y,
            resampling=Resampling.bilinear, src_nodata=0, nodata=0,
        ) as vrt:  # fmt: skip
            np.testing.assert_array_equal(raster.read_band(str(path), padded), vrt.read(1))
    assert len(layout) == 4
    touched = {(r, c) for r in range(0, 160, BLOCK) for c in range(0, 200, BLOCK)}
    assert store.decoded <= len(touched)


def test_blocks_inside_the_window_are_decoded_into_a_strided_out(tiled_file: Path) -> None:
    """A window read into a view of a larger array (a look of the stack): the blocks wholly inside
    are decoded straight there, the others copied, nothing outside the view written."""
    blocks = DecodedBlocks(edge_px=8)
    stack = np.zeros((2, 3, 200, 220), np.uint16)
    window = Window(10, 20, 200, 180)  # blocks (1, 1), (1, 2), (2, 1), (2, 2) wholly inside
    with rasterio.open(tiled_file) as src:
        view = stack[1, 2, 7:187, 13:213]
        assert blocks.read(src, "f", 1, window, out=view) is view
        np.testing.assert_array_equal(stack[1, 2, 7:187, 13:213], src.read(1, window=window))
    stack[1, 2, 7:187, 13:213] = 0
    assert not stack.any()
    assert blocks.decoded == 16
