"""Sentinel-2 facts: band names, native resolutions, scene-classification codes, DN scaling."""

from __future__ import annotations

import re
from datetime import date, datetime

BAND_RESOLUTION_M: dict[str, int] = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
    "B08": 10, "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20, "SCL": 20,
}  # fmt: skip

#: Bands the change detector uses, in array order: blue, green, red, NIR, SWIR1, SWIR2.
CHANGE_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08", "B11", "B12")

#: Scene classification (SCL) codes masked by default: no data, saturated/defective,
#: cloud shadow, cloud medium / high probability, thin cirrus.
SCL_MASKED_DEFAULT: tuple[int, ...] = (0, 1, 3, 8, 9, 10)

#: Digital numbers are reflectance x 10000; from processing baseline 04.00 L2A adds -1000.
QUANTIFICATION_VALUE = 10000.0
BOA_ADD_OFFSET_FROM_BASELINE_0400 = -1000.0

_DATE_PATTERN = re.compile(r"(20\d{2})(\d{2})(\d{2})T\d{6}")
_BAND_PATTERN = re.compile(r"_(B0[1-9]|B1[0-2]|B8A|SCL)(?:_(10|20|60)m)?\.(?:tif|tiff|jp2)$", re.I)


def band_from_filename(name: str) -> str | None:
    """The Sentinel-2 band a file holds, from names like `*_B02.tif` or `*_SCL_20m.jp2`."""
    match = _BAND_PATTERN.search(name)
    return match.group(1).upper() if match else None


def date_from_name(name: str) -> date | None:
    """The acquisition date in a Sentinel-2 product or file name (`..._20160120T104345_...`)."""
    match = _DATE_PATTERN.search(name)
    if not match:
        return None
    try:
        return datetime(int(match[1]), int(match[2]), int(match[3])).date()
    except ValueError:
        return None


def boa_offset(processing_baseline: str | None, level: str) -> float:
    """The additive DN offset of a product: -1000 for L2A from baseline 04.00 on, else 0."""
    if level != "L2A" or not processing_baseline:
        return 0.0
    try:
        return BOA_ADD_OFFSET_FROM_BASELINE_0400 if float(processing_baseline) >= 4.0 else 0.0
    except ValueError:
        return 0.0
