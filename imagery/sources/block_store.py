"""Decoded blocks of tiled rasters, shared by the reads of a process, so each block is decoded once.

A tile's halo reaches only a few pixels into its neighbours' blocks. GDAL's block cache keeps
whole blocks, so once a neighbour's blocks have been evicted, a halo read decodes them again in
full (the Lima grid's inputs took four times the decode-only CPU that way). Here a decoded block
that reaches beyond the window is kept whole for a short while (the tile read beside it at the
same moment uses it; a block wholly inside the window is decoded straight into the caller's
array instead), and the bottom and right edges, `EDGE_PX` deep, much longer: tiles laid out so
that their padded windows end on block boundaries (`grid.tiles` with an anchor) reach into
earlier blocks only through those edges. Any other window is still read exactly, by decoding
what it needs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np
import rasterio
from rasterio.windows import Window

#: Depth (file pixels) of the bottom and right block edges kept after a block's whole copy is
#: dropped: a halo of up to EDGE_PX / 2 grid pixels at 10 m is read from edges alone.
EDGE_PX = 40
#: Whole decoded blocks kept (bytes): about one tile's decoded blocks of every input file.
WHOLE_BYTES = 64 * 2**20
#: Bottom edges kept (bytes): read by the next row of tiles; one row of tiles leaves ~16 MB of them
#: at the Lima+Callao width (~2.3 MB per tile), so this holds two rows at four times its area.
BOTTOM_EDGE_BYTES = 64 * 2**20
#: Right edges kept (bytes): read by the next tile of the row, moments later.
RIGHT_EDGE_BYTES = 16 * 2**20


class _Lru:
    """Values kept by recency up to a byte budget (not thread-safe: the owner locks)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()

    def get(self, key: Hashable) -> np.ndarray | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: np.ndarray) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.used -= old.nbytes
        self._items[key] = value
        self.used += value.nbytes
        while self.used > self.budget and self._items:
            _, dropped = self._items.popitem(last=False)
            self.used -= dropped.nbytes

    def clear(self) -> None:
        self._items.clear()
        self.used = 0


class DecodedBlocks:
    """Windows of tiled rasters assembled from decoded blocks (whole ones recently decoded, edges
    of older ones); `decoded` counts the blocks decoded so far (for benchmarks and tests)."""

    def __init__(
        self,
        whole_bytes: int = WHOLE_BYTES,
        bottom_bytes: int = BOTTOM_EDGE_BYTES,
        right_bytes: int = RIGHT_EDGE_BYTES,
        edge_px: int = EDGE_PX,
    ) -> None:
        self.edge_px = edge_px
        self.decoded = 0
        self._lock = threading.Lock()
        self._whole = _Lru(whole_bytes)
        self._bottom = _Lru(bottom_bytes)
        self._right = _Lru(right_bytes)

    def read(
        self,
        src: rasterio.io.DatasetReader,
        file_key: Hashable,
        band: int,
        window: Window,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """`src.read(band, window=window, out=out)` for a window inside the file, from decoded blocks.

        `file_key` names this version of the file (path and modification stamp): blocks are
        shared by reads with the same key, so the caller must hold `src` exclusively (GDAL
        datasets are not thread-safe) and change the key when the file changes."""
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        if r0 < 0 or c0 < 0 or r1 > src.height or c1 > src.width:
            raise ValueError(f"DecodedBlocks.read: {window} is not inside the {src.height}x{src.width} file")
        bh, bw = src.block_shapes[band - 1]
        shape, dtype = (r1 - r0, c1 - c0), np.dtype(src.dtypes[band - 1])
        if out is None:
            out = np.empty(shape, dtype)
        elif out.shape != shape or out.dtype != dtype:
            raise ValueError(
                f"DecodedBlocks.read: out is {out.dtype} {out.shape}, not the window's {dtype} {shape}"
            )
        last_bi, last_bj = (r1 - 1) // bh, (c1 - 1) // bw
        for bi in range(r0 // bh, last_bi + 1):
            for bj in range(c0 // bw, last_bj + 1):
                top, left = bi * bh, bj * bw
                ys, ye = max(r0, top) - top, min(r1, top + bh) - top
                xs, xe = max(c0, left) - left, min(c1, left + bw) - left
                # a window read after this one, below or right of it, reaches into these edges
                keep = (bi == last_bi, bj == last_bj)
                target = out[top + ys - r0 : top + ye - r0, left + xs - c0 : left + xe - c0]
                self._piece(src, (file_key, band, bi, bj), band, (bi, bj), (ys, ye, xs, xe), keep, target)
        return out

    @property
    def held_bytes(self) -> int:
        """Bytes of decoded blocks and edges kept now."""
        with self._lock:
            return self._whole.used + self._bottom.used + self._right.used

    def clear(self) -> None:
        """Drop every kept block and edge."""
        with self._lock:
            for kept in (self._whole, self._bottom, self._right):
                kept.clear()

    def _piece(
        self,
        src: rasterio.io.DatasetReader,
        key: Hashable,
        band: int,
        block: tuple[int, int],
        sub: tuple[int, int, int, int],
        keep: tuple[bool, bool],
        target: np.ndarray,
    ) -> None:
        """target = rows ys:ye, columns xs:xe of `block`: from the whole block, else from an edge that
        holds them, else decoded. A block wholly in the window is decoded straight into `target`
        (no copy, no fresh array; no other window of a tile layout reads it whole), any other
        block is kept whole for the windows beside; the bottom / right edge is kept when `keep`
        says so (the block is the last of the window's blocks downwards / rightwards)."""
        ys, ye, xs, xe = sub
        bh, bw = src.block_shapes[band - 1]
        h, w = min(bh, src.height - block[0] * bh), min(bw, src.width - block[1] * bw)
        d = self.edge_px
        with self._lock:
            whole = self._whole.get(key)
            bottom = self._bottom.get(key) if whole is None and ys >= h - d else None
            right = self._right.get(key) if whole is None and bottom is None and xs >= w - d else None
        if whole is not None:
            target[...] = whole[ys:ye, xs:xe]
            return
        if bottom is not None:
            target[...] = bottom[ys - (h - d) : ye - (h - d), xs:xe]
            return
        if right is not None:
            target[...] = right[ys:ye, xs - (w - d) : xe - (w - d)]
            return
        window = Window(block[1] * bw, block[0] * bh, w, h)
        inside = (ys, ye, xs, xe) == (0, h, 0, w)
        data = src.read(band, window=window, out=target) if inside else src.read(band, window=window)
        with self._lock:
            self.decoded += 1
            if not inside:
                self._whole.put(key, data)
            if keep[0] and h > d:
                self._bottom.put(key, data[h - d :].copy())  # a copy: a view would keep the block
            if keep[1] and w > d:
                self._right.put(key, data[:, w - d :].copy())
        if not inside:
            target[...] = data[ys:ye, xs:xe]
