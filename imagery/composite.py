"""Per-period composites: per-pixel median of the valid looks plus the count of valid looks."""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from imagery.sentinel2 import QUANTIFICATION_VALUE


def median_composite(
    looks: np.ndarray | Sequence[np.ndarray],
    *,
    clear: np.ndarray | None = None,
    days: Sequence[int] | None = None,
    boa_offsets: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Median of valid looks per pixel and band, and the valid-look count per pixel.

    `looks` are (bands, y, x) float32 arrays with NaN for no data, or all of them as one
    (looks, bands, y, x) array (used in place). With `boa_offsets` (one per look) they are digital
    numbers instead (one (looks, bands, y, x) array; 0 no data), turned into reflectance as
    `raster.to_reflectance` does (float32 (DN + offset) / QUANTIFICATION_VALUE) on the way.
    A look is valid at a pixel when all its bands are finite there and, with `clear`
    ((looks, y, x) bool: the cloud mask), the pixel is clear. Looks with the same `days` entry are
    overlapping granules of one acquisition: the first valid one counts, never twice. Same values
    as `np.nanmedian` over the valid looks (float32), in one pass without sorting the whole stack.
    """
    if len(looks) == 0:
        raise ValueError("median_composite needs at least one look")
    if boa_offsets is not None:
        if not (isinstance(looks, np.ndarray) and looks.ndim == 4 and looks.dtype.kind in "ui"):
            raise ValueError(
                "median_composite: digital numbers come as one integer (looks, bands, y, x) array"
            )
        stack = np.ascontiguousarray(looks)
        offsets = np.asarray(boa_offsets, np.float32)
    elif isinstance(looks, np.ndarray) and looks.ndim == 4:
        stack = np.ascontiguousarray(looks, dtype=np.float32)
    else:
        stack = np.stack([np.asarray(look, np.float32) for look in looks])  # (looks, bands, y, x)
    n_looks = stack.shape[0]
    if boa_offsets is None:
        offsets = np.zeros(n_looks, np.float32)
    if clear is None:
        clear = np.ones((n_looks, *stack.shape[2:]), np.bool_)
    day = np.arange(n_looks) if days is None else np.unique(np.asarray(days), return_inverse=True)[1]
    if clear.shape != (n_looks, *stack.shape[2:]) or day.shape != (n_looks,) or offsets.shape != (n_looks,):
        raise ValueError(
            f"clear {clear.shape} / days {day.shape} / offsets {offsets.shape} "
            f"do not match looks {stack.shape}"
        )
    composite = np.empty(stack.shape[1:], np.float32)
    count = np.empty(stack.shape[2:], np.uint8)
    clear = np.ascontiguousarray(clear, np.bool_)
    scale = np.float32(1.0 / QUANTIFICATION_VALUE)
    dn = boa_offsets is not None
    _median_of_valid_looks(stack, dn, offsets, scale, clear, day.astype(np.intp), composite, count)
    return composite, count


@numba.njit(cache=True, nogil=True)
def _median_of_valid_looks(
    stack: np.ndarray,
    dn: bool,
    offsets: np.ndarray,
    scale: np.float32,
    clear: np.ndarray,
    day: np.ndarray,
    out: np.ndarray,
    count: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """One pass over the stack, row by row: with three looks the median of three of every pixel
    and, beside it, which looks have every band finite; then the pixels with fewer valid looks.
    Values are read as reflectance (`_reflectance`: digital numbers converted when `dn`)."""
    n_looks, n_bands, ny, nx = stack.shape
    n_days = day.max() + 1
    taken = np.zeros(n_days, np.bool_)
    use = np.empty((n_looks, nx), np.bool_)
    finite = np.empty((n_looks, nx), np.float32)  # 0 while every band of the look is finite
    pick = np.empty(n_looks, np.intp)
    buf = np.empty(n_looks, np.float32)
    rest = np.empty(nx, np.intp)
    for y in range(ny):
        finite[:] = 0
        for b in range(n_bands):
            if n_looks == 3:
                _median_of_three(
                    stack[0, b, y], stack[1, b, y], stack[2, b, y], dn, offsets, scale, out[b, y], finite
                )
            else:
                for look in range(n_looks):
                    _add_nan_of(stack[look, b, y], dn, offsets[look], scale, finite[look])
        for look in range(n_looks):
            _valid_look(clear[look, y], finite[look], use[look])
        if n_days < n_looks:  # one look per day: the first valid granule
            for x in range(nx):
                taken[:] = False
                for look in range(n_looks):
                    if use[look, x]:
                        use[look, x] = not taken[day[look]]
                        taken[day[look]] = True
        count[y] = 0
        for look in range(n_looks):
            _add_bool(count[y], use[look])
        n_rest = 0  # pixels not taken by the common case: all three looks valid
        for x in range(nx):
            if not (n_looks == 3 and count[y, x] == 3):
                rest[n_rest] = x
                n_rest += 1
        for x in rest[:n_rest]:
            m = 0
            for look in range(n_looks):
                if use[look, x]:
                    pick[m] = look
                    m += 1
            for b in range(n_bands):
                for i in range(m):
                    buf[i] = _reflectance(stack[pick[i], b, y, x], dn, offsets[pick[i]], scale)
                out[b, y, x] = _median(buf, m) if m else np.nan


@numba.njit(cache=True, nogil=True, inline="always")
def _reflectance(
    value: float, dn: bool, offset: np.float32, scale: np.float32
) -> np.float32:  # pragma: no cover
    """A stack value as float32 reflectance: a digital number (`dn`) exactly as
    `raster.to_reflectance` converts it ((DN + offset) * scale; 0 -> NaN; adding an offset of 0
    changes no DN), else the value itself."""
    if not dn:
        return np.float32(value)
    if value == 0:
        return np.float32(np.nan)
    return (np.float32(value) + offset) * scale


@numba.njit(cache=True, nogil=True, inline="always")
def _add_nan_of(
    values: np.ndarray, dn: bool, offset: np.float32, scale: np.float32, finite: np.ndarray
) -> None:  # pragma: no cover - compiled
    """finite += 0 * reflectance: stays 0 where every band added so far is finite, NaN elsewhere."""
    for x in range(finite.size):
        finite[x] += _reflectance(values[x], dn, offset, scale) * np.float32(0)


@numba.njit(cache=True, nogil=True, inline="always")
def _valid_look(
    clear: np.ndarray, finite: np.ndarray, use: np.ndarray
) -> None:  # pragma: no cover - compiled
    """use = clear and every band finite (see `_add_nan_of`), along one row of one look."""
    for x in range(use.size):
        use[x] = clear[x] and finite[x] == 0


@numba.njit(cache=True, nogil=True, inline="always")
def _add_bool(count: np.ndarray, flag: np.ndarray) -> None:  # pragma: no cover - compiled
    """count += flag, element by element."""
    for x in range(count.size):
        count[x] += flag[x]


@numba.njit(cache=True, nogil=True, inline="always")
def _median_of_three(
    v0: np.ndarray,
    v1: np.ndarray,
    v2: np.ndarray,
    dn: bool,
    offsets: np.ndarray,
    scale: np.float32,
    out: np.ndarray,
    finite: np.ndarray,
) -> None:  # pragma: no cover
    """out = max(min(v0, v1), min(max(v0, v1), v2)) element by element for the three looks' rows
    (as reflectance), as selects (vectorised), and `_add_nan_of` for each of the three looks
    (finite[0..2]) while their values are at hand."""
    o0, o1, o2 = offsets[0], offsets[1], offsets[2]
    f0, f1, f2 = finite[0], finite[1], finite[2]
    zero = np.float32(0)
    for x in range(out.size):
        a = _reflectance(v0[x], dn, o0, scale)
        b = _reflectance(v1[x], dn, o1, scale)
        c = _reflectance(v2[x], dn, o2, scale)
        f0[x] += a * zero
        f1[x] += b * zero
        f2[x] += c * zero
        lo = b if b < a else a
        hi = b if b > a else a
        mid = c if c < hi else hi
        out[x] = mid if mid > lo else lo


@numba.njit(cache=True, nogil=True, inline="always")
def _median(buf: np.ndarray, m: int) -> float:  # pragma: no cover - compiled
    """Median of buf[:m] (m >= 1) as np.median gives it in float32; sorts buf[:m] when m > 4."""
    half = np.float32(2.0)
    if m == 1:
        return buf[0]
    if m == 2:
        return (buf[0] + buf[1]) / half
    if m == 3:
        return max(min(buf[0], buf[1]), min(max(buf[0], buf[1]), buf[2]))
    if m == 4:  # the middle two: the larger of the pairs' minima and the smaller of their maxima
        lo = max(min(buf[0], buf[1]), min(buf[2], buf[3]))
        hi = min(max(buf[0], buf[1]), max(buf[2], buf[3]))
        return (lo + hi) / half
    for i in range(1, m):
        v = buf[i]
        j = i
        while j > 0 and buf[j - 1] > v:
            buf[j] = buf[j - 1]
            j -= 1
        buf[j] = v
    if m % 2 == 1:
        return buf[m // 2]
    return (buf[m // 2 - 1] + buf[m // 2]) / half
