"""Connected components of a raster mask taken in row strips, numbered as whole-raster labelling
numbers them, so memory holds one strip and a few numbers per component, never a label raster of
the whole grid.

Each strip is labelled on its own (`label`: runs of pixels joined by union-find, numbered as
scipy.ndimage.label numbers them); pieces that touch across a strip boundary (the last row of one
strip and the first row of the next, diagonals included with 8-connectivity) are joined afterwards
as a graph of piece ids. A second pass labels each strip again and maps its pieces to their
component.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

CONNECTIVITIES = (4, 8)


def strip_bounds(height: int, strip_rows: int | None) -> list[tuple[int, int]]:
    """(first row, end row) of consecutive strips of `strip_rows` rows covering `height` rows
    (one strip when `strip_rows` is None)."""
    step = max(1, height if strip_rows is None else int(strip_rows))
    return [(row, min(row + step, height)) for row in range(0, height, step)]


def _touching(above: np.ndarray, below: np.ndarray, connectivity: int) -> np.ndarray:
    """(k, 2) pairs of piece ids that touch across a strip boundary (0 = background)."""
    width = above.size
    pairs = []
    shifts = (-1, 0, 1) if connectivity == 8 else (0,)
    for shift in shifts:
        a = above[max(0, -shift) : width - max(0, shift)]
        b = below[max(0, shift) : width - max(0, -shift)]
        both = (a > 0) & (b > 0)
        pairs.append(np.stack([a[both], b[both]], axis=1))
    return np.unique(np.concatenate(pairs), axis=0)


class StripComponents:
    """Components of a mask fed strip by strip from the top (`add`), resolved by `finish`, then
    read back strip by strip (`labels`) with ids 1..n in raster order of each component's first
    pixel (as `scipy.ndimage.label` numbers them on the whole mask); 0 is background."""

    def __init__(self, connectivity: int = 8) -> None:
        if connectivity not in CONNECTIVITIES:
            raise ValueError(f"connectivity {connectivity}: expected 4 or 8")
        self.connectivity = connectivity
        self._offsets: list[int] = []
        self._counts: list[int] = []
        self._sizes: list[np.ndarray] = [np.zeros(1, np.int32)]
        self._edges: list[np.ndarray] = []
        self._last_row: np.ndarray | None = None
        self._component: np.ndarray | None = None
        #: Pixels per component (index 0: background, 0), after `finish`.
        self.sizes = np.zeros(1, np.int64)

    def add(self, mask: np.ndarray) -> None:
        """Take the next strip of the mask (rows below the previous strip, same width)."""
        labels, sizes = label(mask, self.connectivity)
        n = sizes.size - 1
        offset = sum(self._counts)
        self._offsets.append(offset)
        self._counts.append(n)
        self._sizes.append(sizes[1:].astype(np.int32))
        if labels.shape[0] == 0:
            return
        first = np.where(labels[0] > 0, labels[0].astype(np.int64) + offset, 0)
        if self._last_row is not None:
            self._edges.append(_touching(self._last_row, first, self.connectivity))
        self._last_row = np.where(labels[-1] > 0, labels[-1].astype(np.int64) + offset, 0)

    def finish(self) -> int:
        """Join pieces across strip boundaries; returns the number of components."""
        pieces = sum(self._counts) + 1
        component = np.arange(pieces, dtype=np.int32)
        edges = np.concatenate([np.zeros((0, 2), np.int64), *self._edges])
        if edges.size:
            # Only pieces on strip boundaries can join: a graph of those, each component of it
            # named by its first piece (pieces are numbered in raster order of their first pixel).
            nodes, ends = np.unique(edges, return_inverse=True)
            ends = ends.reshape(-1, 2)
            links = (np.ones(len(ends), np.int8), (ends[:, 0], ends[:, 1]))
            graph = coo_matrix(links, shape=(nodes.size, nodes.size))
            count, joined = connected_components(graph, directed=False)
            first = np.full(count, pieces, np.int64)
            np.minimum.at(first, joined, nodes)
            component[nodes] = first[joined]
        # Number the components 1..n in the order of their first piece: whole-mask labelling order.
        number = np.cumsum(component == np.arange(pieces, dtype=np.int32), dtype=np.int32) - 1
        self._component = number[component]
        del component, number
        pixels = np.concatenate(self._sizes)
        count = int(self._component.max()) + 1
        self.sizes = np.bincount(self._component, weights=pixels, minlength=count).astype(np.int64)
        self._edges, self._sizes, self._last_row = [], [], None
        return count - 1

    def components_of(self, index: int) -> np.ndarray:
        """Component id of each piece of strip `index` (position 0, the background, is 0): what
        `pieces` labels map to, known without labelling the strip again."""
        if self._component is None:
            raise RuntimeError("StripComponents.components_of before finish")
        offset = self._offsets[index]
        lookup = self._component[offset : offset + self._counts[index] + 1].copy()
        lookup[0] = 0
        return lookup

    def pieces(self, index: int, mask: np.ndarray) -> np.ndarray:
        """Piece labels of strip `index` (the same mask as given to `add`), numbered as for `add`."""
        labels, sizes = label(mask, self.connectivity)
        n = sizes.size - 1
        if n != self._counts[index]:
            raise ValueError(f"strip {index} has {n} pieces, {self._counts[index]} when added")
        return labels

    def labels(self, index: int, mask: np.ndarray) -> np.ndarray:
        """Component id of every pixel of strip `index` (the same mask as given to `add`)."""
        lookup = self.components_of(index)
        return lookup[self.pieces(index, mask)]


def sieve_mask(mask: np.ndarray, min_pixels: int, connectivity: int = 8) -> np.ndarray:
    """Pixels of `mask` in components of at least `min_pixels` pixels (whole array at once)."""
    parts = StripComponents(connectivity)
    parts.add(mask)
    parts.finish()
    return (parts.sizes >= min_pixels)[parts.labels(0, mask)] & mask


def label(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of a 2-D mask: int32 labels 1..n numbered in raster order of each
    component's first pixel (as scipy.ndimage.label numbers them), 0 outside; and the pixels of
    each label (index 0: 0)."""
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity {connectivity}: expected 4 or 8")
    inside = np.ascontiguousarray(mask, dtype=np.bool_)
    c0, c1, row_first = runs(inside)
    root = run_components(c0, c1, row_first, connectivity == 8)
    return _paint(inside.shape, c0, c1, row_first, root)


@numba.njit(cache=True, nogil=True)
def runs(inside: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """The runs of True pixels of a 2-D mask, row by row: the first and end column of each, and
    the index of each row's first run (one more entry: the number of runs)."""
    h, w = inside.shape
    c0s, c1s = [0], [0]
    row_first = np.empty(h + 1, np.int64)
    for r in range(h):
        row_first[r] = len(c0s) - 1
        c = 0
        while c < w:
            if inside[r, c]:
                start = c
                while c < w and inside[r, c]:
                    c += 1
                c0s.append(start)
                c1s.append(c)
            c += 1
    row_first[h] = len(c0s) - 1
    return np.array(c0s[1:], np.int64), np.array(c1s[1:], np.int64), row_first


@numba.njit(cache=True, nogil=True)
def run_components(
    c0: np.ndarray, c1: np.ndarray, row_first: np.ndarray, diagonal: bool
) -> np.ndarray:  # pragma: no cover
    """The component of each run, named by its first run: runs of consecutive rows that share a
    column are joined (union-find), or that touch at a corner too when `diagonal`."""
    parent = np.arange(c0.size)
    reach = 1 if diagonal else 0
    for r in range(1, row_first.size - 1):
        i, j = row_first[r - 1], row_first[r]
        while i < row_first[r] and j < row_first[r + 1]:
            if max(c0[i], c0[j]) < min(c1[i], c1[j]) + reach:
                a, b = _root(parent, i), _root(parent, j)
                parent[max(a, b)] = min(a, b)
            if c1[i] < c1[j]:
                i += 1
            else:
                j += 1
    for k in range(c0.size):
        parent[k] = _root(parent, k)
    return parent


@numba.njit(cache=True, nogil=True, inline="always")
def _root(parent: np.ndarray, k: int) -> int:  # pragma: no cover
    """The root of run `k` in the union-find forest, halving the path on the way."""
    while parent[k] != k:
        parent[k] = parent[parent[k]]
        k = parent[k]
    return k


@numba.njit(cache=True, nogil=True)
def _paint(
    shape: tuple[int, int], c0: np.ndarray, c1: np.ndarray, row_first: np.ndarray, root: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """The label raster of runs whose components are `root` (components numbered in the order of
    their first run) and the pixels per label."""
    number = np.zeros(root.size, np.int32)
    n = 0
    for k in range(root.size):
        if root[k] == k:
            n += 1
            number[k] = n
        else:
            number[k] = number[root[k]]
    labels = np.zeros(shape, np.int32)
    sizes = np.zeros(n + 1, np.int64)
    for r in range(shape[0]):
        for k in range(row_first[r], row_first[r + 1]):
            labels[r, c0[k] : c1[k]] = number[k]
            sizes[number[k]] += c1[k] - c0[k]
    return labels, sizes
