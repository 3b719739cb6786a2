"""The statistics GDAL stores for a band (minimum, maximum, mean, standard deviation, share of valid
pixels), summed over the parts of a raster while it is written, so nothing reads it again for them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np


@dataclass
class BandStatistics:
    """Running statistics of the finite values of a float raster's parts (float64; parts combined
    with Chan et al.'s pairwise update, so the order of the parts barely matters)."""

    pixels: int = 0
    count: int = 0
    minimum: float = math.inf
    maximum: float = -math.inf
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean

    @classmethod
    def of(cls, values: np.ndarray) -> BandStatistics:
        """The statistics of one part of the raster (any shape; NaN is no data)."""
        count, minimum, maximum, mean, m2 = _moments(np.ascontiguousarray(values).reshape(-1))
        return cls(values.size, count, minimum, maximum, mean, m2)

    def merge(self, part: BandStatistics) -> None:
        """Add the statistics of another part of the raster."""
        self.pixels += part.pixels
        if part.count == 0:
            return
        total = self.count + part.count
        delta = part.mean - self.mean
        self.mean += delta * part.count / total
        self.m2 += part.m2 + delta * delta * self.count * part.count / total
        self.count = total
        self.minimum, self.maximum = min(self.minimum, part.minimum), max(self.maximum, part.maximum)

    def gdal_tags(self) -> dict[str, str]:
        """The band tags GDAL's ComputeStatistics stores (population standard deviation; the valid
        percentage to 4 significant digits, as GDAL writes it); empty without a valid pixel."""
        if self.count == 0:
            return {}
        return {
            "STATISTICS_MINIMUM": str(self.minimum), "STATISTICS_MAXIMUM": str(self.maximum),
            "STATISTICS_MEAN": str(self.mean), "STATISTICS_STDDEV": str(math.sqrt(self.m2 / self.count)),
            "STATISTICS_VALID_PERCENT": f"{100.0 * self.count / self.pixels:.4g}",
        }  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _moments(values: np.ndarray) -> tuple[int, float, float, float, float]:  # pragma: no cover - compiled
    """(count, min, max, mean, sum of squared deviations) of the finite values, two passes in float64."""
    count, total = 0, 0.0
    lo, hi = np.inf, -np.inf
    for v in values:
        if np.isfinite(v):
            x = float(v)
            count += 1
            total += x
            lo, hi = min(lo, x), max(hi, x)
    mean = total / count if count else 0.0
    m2 = 0.0
    for v in values:
        if np.isfinite(v):
            d = float(v) - mean
            m2 += d * d
    return count, lo, hi, mean, m2
