"""Outlines of labelled pixel regions as polygons in pixel coordinates: the boundaries between
pixels traced in one compiled pass (what GDAL's polygonize does, ~10x faster on a strip of the
Lima mosaic), then assembled into shapely polygons in one call.

Each 4-connected component of the labelled pixels becomes one polygon (its outer ring and its
holes, corners only); where two of its pixels touch only at a corner the ring passes that corner
twice, which `shapely.make_valid` mends. The union of a label's polygons is its pixels.
"""

from __future__ import annotations

import numba
import numpy as np
import shapely

from imagery.components import run_components, runs

#: Direction steps (x = column, y = row, rows downwards): east, south, west, north.
_DX = np.array([1, 0, -1, 0], np.int64)
_DY = np.array([0, 1, 0, -1], np.int64)


def label_outlines(labels: np.ndarray, row0: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(label, polygon) arrays: one polygon per 4-connected component of the pixels with a label
    above 0, in pixel coordinates with rows shifted by `row0`. Pixels of different labels must
    not touch (not even at a corner), as for 8-connected patches."""
    coords, ring_ends, start, component = _trace_rings(np.ascontiguousarray(labels > 0))
    if ring_ends.size == 0:
        return np.zeros(0, labels.dtype), np.zeros(0, object)
    coords[:, 1] += row0
    rows, cols = start[:, 0], start[:, 1]
    ring_starts = np.r_[0, ring_ends[:-1]]
    twice_area = _ring_areas(coords, ring_starts, ring_ends)
    # Each component's outer ring (positive area: clockwise with rows downwards) first, then its holes.
    order = np.lexsort((twice_area < 0, component))
    sizes = (ring_ends - ring_starts)[order]
    ring_offsets = np.r_[0, np.cumsum(sizes)]
    coords = np.concatenate([coords[ring_starts[i] : ring_ends[i]] for i in order])
    shell = np.flatnonzero(twice_area[order] > 0)
    polygons = shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, coords, (ring_offsets, np.r_[shell, len(order)])
    )
    return labels[rows[order[shell]], cols[order[shell]]], polygons


def _ring_areas(coords: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Twice the signed area of each closed ring (shoelace; positive clockwise with rows down)."""
    x, y = coords[:, 0], coords[:, 1]
    cross = np.zeros(len(coords))
    cross[:-1] = x[:-1] * y[1:] - x[1:] * y[:-1]
    cross[ends - 1] = 0.0  # the last vertex repeats the first: no edge to the next ring
    return np.add.reduceat(cross, starts)


@numba.njit(cache=True, nogil=True)
def _trace_rings(
    inside: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """Every boundary ring of `inside` walked with the inside on the right, turning right at a
    corner where inside pixels touch only diagonally (so rings bound 4-connected components).
    Returns the ring corners (x, y; each ring closed), each ring's end offset into them, the
    (row, col) of the inside pixel below each ring's first edge (rings start at their first top
    edge in raster order) and the 4-connected component each ring bounds (a number per strip)."""
    h, w = inside.shape
    run_c0, run_c1, row_first = runs(inside)
    component = run_components(run_c0, run_c1, row_first, False)
    seen = np.zeros((h, w), np.bool_)
    coords = np.empty((1024, 2), np.float64)
    n = 0
    ends, start_rows, start_cols, ring_components = [0], [0], [0], [0]
    for r in range(h):
        for k in range(row_first[r], row_first[r + 1]):
            for c in range(run_c0[k], run_c1[k]):
                if seen[r, c] or (r > 0 and inside[r - 1, c]):
                    continue
                first = n
                x, y, d = c, r, 0
                while True:
                    if d == 0:
                        seen[y, x] = True  # the top edge of pixel (y, x)
                    if n + 2 > coords.shape[0]:
                        grown = np.empty((coords.shape[0] * 2, 2), np.float64)
                        grown[:n] = coords[:n]
                        coords = grown
                    x += _DX[d]
                    y += _DY[d]
                    turn = _next_direction(inside, x, y, d)
                    if turn != d:
                        coords[n, 0] = x
                        coords[n, 1] = y
                        n += 1
                    d = turn
                    if x == c and y == r and d == 0:
                        break
                coords[n, 0] = coords[first, 0]
                coords[n, 1] = coords[first, 1]
                n += 1
                ends.append(n)
                start_rows.append(r)
                start_cols.append(c)
                ring_components.append(component[k])
    rings = len(ends) - 1
    out_ends = np.empty(rings, np.int64)
    start = np.empty((rings, 2), np.int64)
    out_components = np.empty(rings, np.int64)
    for i in range(rings):
        out_ends[i] = ends[i + 1]
        start[i, 0] = start_rows[i + 1]
        start[i, 1] = start_cols[i + 1]
        out_components[i] = ring_components[i + 1]
    return coords[:n].copy(), out_ends, start, out_components


@numba.njit(cache=True, nogil=True, inline="always")
def _inside_at(inside: np.ndarray, row: int, col: int) -> bool:  # pragma: no cover
    return 0 <= row < inside.shape[0] and 0 <= col < inside.shape[1] and inside[row, col]


@numba.njit(cache=True, nogil=True, inline="always")
def _next_direction(inside: np.ndarray, x: int, y: int, d: int) -> int:  # pragma: no cover
    """The way on from corner (x, y) reached going `d`, keeping the inside on the right: the two
    pixels ahead decide (right turn if the one ahead right is outside, left turn if both are
    inside, straight on otherwise)."""
    # pixels around the corner: NW (y-1, x-1), NE (y-1, x), SW (y, x-1), SE (y, x)
    if d == 0:  # east: ahead left NE, ahead right SE
        left, right = _inside_at(inside, y - 1, x), _inside_at(inside, y, x)
    elif d == 1:  # south: ahead left SE, ahead right SW
        left, right = _inside_at(inside, y, x), _inside_at(inside, y, x - 1)
    elif d == 2:  # west: ahead left SW, ahead right NW
        left, right = _inside_at(inside, y, x - 1), _inside_at(inside, y - 1, x - 1)
    else:  # north: ahead left NW, ahead right NE
        left, right = _inside_at(inside, y - 1, x - 1), _inside_at(inside, y - 1, x)
    if not right:
        return (d + 1) % 4
    if left:
        return (d + 3) % 4
    return d
