"""The band statistics tags as `export.describe_scratch` stores them from GDAL's ComputeStatistics
of the whole raster: the reference the tests compare summed statistics and COGs with."""

from __future__ import annotations

from pathlib import Path

import rasterio


def gdal_statistics_tags(path: Path) -> dict[str, str]:
    """GDAL's statistics of band 1 of `path`, computed without writing to it or beside it (no PAM)."""
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(path) as ds:
        stats = ds.stats(approx=False)[0]
        valid = ds.tags(1)["STATISTICS_VALID_PERCENT"]
    return {
        "STATISTICS_MINIMUM": str(stats.min), "STATISTICS_MAXIMUM": str(stats.max),
        "STATISTICS_MEAN": str(stats.mean), "STATISTICS_STDDEV": str(stats.std),
        "STATISTICS_VALID_PERCENT": valid,
    }  # fmt: skip
