"""Writers for published layers: COGs, GeoJSON, JSON; every file lands by atomic rename."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.shutil import copy as rio_copy

from imagery.overviews import with_average_overviews

#: change_class.tif codes, names and colours (RGBA) shown in QGIS and the report.
CHANGE_CLASSES: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    0: ("no change", (255, 255, 255, 0)),  # white where a viewer ignores alpha (TIFF palettes do)
    1: ("new construction / built-up gain", (228, 26, 28, 255)),
    2: ("soil disturbance / land clearing", (255, 127, 0, 255)),
    3: ("demolition / built-up loss", (152, 78, 163, 255)),
    4: ("vegetation loss", (166, 86, 40, 255)),
    5: ("vegetation gain", (77, 175, 74, 255)),
    6: ("water change", (55, 126, 184, 255)),
    255: ("no data", (0, 0, 0, 0)),
}
MAN_MADE_CLASSES = (1, 2, 3)
#: Largest absolute error of the stored change score (LERC): a float32 score 0..1 does not
#: compress losslessly (deflate ratio 1.17 on a Lima-sized run); to 0.001 it is ~5x smaller
#: and written ~2x faster (benchmarks/compression.py, docs/performance.md).
SCORE_MAX_ERROR = 0.001
NATURAL_CLASSES = (4, 5, 6)
CLASS_NODATA = 255


def in_classes(classes: np.ndarray, group: tuple[int, ...]) -> np.ndarray:
    """Pixels of a class raster whose class is one of `group`."""
    low, high = min(group), max(group)
    if classes.dtype == np.uint8 and len(set(group)) == high - low + 1:
        # Consecutive classes of a uint8 raster: one wrapping subtraction and one comparison, ~10x
        # faster than np.isin or a lookup table on a 512-row strip of the Lima mosaic.
        return (classes - np.uint8(low)) <= np.uint8(high - low)
    return np.isin(classes, group)


COG_BLOCKSIZE = 512
COG_OPTIONS = {
    "BLOCKSIZE": COG_BLOCKSIZE,
    "COMPRESS": "DEFLATE",
    "LEVEL": 6,
    "OVERVIEWS": "IGNORE_EXISTING",
    "BIGTIFF": "IF_SAFER",
    "NUM_THREADS": "ALL_CPUS",
}

#: GDAL settings while the COG driver copies a scratch raster: it builds the overviews first in a
#: temporary file compressed with ZSTD at GTiff's default level 9; level 1 takes ~0.8 s less CPU on
#: the Lima-sized score and the COG written from it is byte-identical (the temporary is lossless).
COG_TMP_ENV = {"ZSTD_LEVEL_OVERVIEW": 1}


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """A temporary path beside `final`, renamed onto it only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the extension: drivers (GPKG) check it.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def scratch_raster(path: Path, gbox: GeoBox, dtype: str, nodata: float) -> rasterio.io.DatasetWriter:
    """An uncompressed tiled GeoTIFF to assemble a mosaic into, window by window."""
    return rasterio.open(
        path, "w", driver="GTiff", width=gbox.shape.x, height=gbox.shape.y, count=1, dtype=dtype,
        crs=str(gbox.crs), transform=gbox.affine, nodata=nodata, tiled=True,
        blockxsize=512, blockysize=512, BIGTIFF="IF_SAFER",
    )  # fmt: skip


def finish_cog(
    scratch: Path,
    final: Path,
    *,
    description: str,
    categorical: bool,
    predictor: str,
    max_error: float = 0.0,
) -> Path:
    """Turn an assembled scratch GeoTIFF into a COG with overviews, statistics and metadata;
    lossless deflate with `predictor`, or LERC to `max_error` (absolute) when it is above 0."""
    describe_scratch(scratch, description=description, categorical=categorical)
    return write_cog(scratch, final, categorical=categorical, predictor=predictor, max_error=max_error)


def describe_scratch(scratch: Path, *, description: str, categorical: bool) -> None:
    """Store the band description, exact statistics and, when `categorical`, the class colours and
    names in an assembled scratch GeoTIFF (the first half of `finish_cog`; it rewrites the file's
    header, so nothing else may read the file meanwhile)."""
    with rasterio.open(scratch, "r+") as ds:
        ds.set_band_description(1, description)
        stats = ds.stats(approx=False)[0]
        ds.update_tags(
            1, STATISTICS_MINIMUM=stats.min, STATISTICS_MAXIMUM=stats.max,
            STATISTICS_MEAN=stats.mean, STATISTICS_STDDEV=stats.std,
        )  # fmt: skip
        if categorical:
            ds.write_colormap(1, {k: rgba for k, (_, rgba) in CHANGE_CLASSES.items()})
            ds.update_tags(1, **{f"CLASS_{k}": name for k, (name, _) in CHANGE_CLASSES.items()})


def write_cog(
    scratch: Path,
    final: Path,
    *,
    categorical: bool,
    predictor: str,
    max_error: float = 0.0,
    description: str | None = None,
    statistics: Mapping[str, str] | None = None,
) -> Path:
    """Copy a described scratch GeoTIFF into a COG at `final` (the second half of `finish_cog`; it
    only reads the scratch file). For a float raster with NaN no data (its overviews averaged here)
    a `description` and its `statistics` tags may be given instead of describing the scratch first
    (the caller sums them while writing the scratch: `BandStatistics.gdal_tags`): they go into the
    VRT the COG is copied from (with the tags `describe_scratch` stores, the same COG byte for
    byte), and the scratch may be read by others all along, and is not read again for them."""
    options: dict[str, object] = dict(COG_OPTIONS, PREDICTOR=predictor)
    if max_error > 0:
        options |= {"COMPRESS": "LERC_DEFLATE", "MAX_Z_ERROR": max_error}
        del options["PREDICTOR"]
    options["RESAMPLING"] = "NEAREST" if categorical else "AVERAGE"
    with rasterio.Env(**COG_TMP_ENV), atomic_path(final) as tmp:
        with rasterio.open(scratch) as ds:
            averaged_here = not categorical and ds.dtypes[0] == "float32" and math.isnan(ds.nodata or 0.0)
        if description is not None and not averaged_here:
            raise ValueError(
                f"{scratch}: a description is stored here only for a float raster with NaN no data"
            )
        if statistics is not None and description is None:
            raise ValueError(f"{scratch}: statistics are stored here only with a description")
        if description is not None and statistics is None:
            raise ValueError(f"{scratch}: a description is stored here only with its statistics")
        if not averaged_here:
            rio_copy(scratch, tmp, driver="COG", **options)
        else:  # the same overviews, averaged in a compiled pass (imagery/overviews.py)
            with tempfile.TemporaryDirectory(prefix=f".{final.name}.", dir=final.parent) as folder:
                source = with_average_overviews(scratch, Path(folder), COG_BLOCKSIZE)
                if description is not None and statistics is not None:
                    with rasterio.open(source, "r+") as vrt:
                        vrt.set_band_description(1, description)
                        vrt.update_tags(1, **statistics)
                rio_copy(source, tmp, driver="COG", **(options | {"OVERVIEWS": "FORCE_USE_EXISTING"}))
    return final


def write_json(data: Any, final: Path) -> Path:
    """Write JSON atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return final


def write_geojson(frame: Any, final: Path) -> Path:
    """Write a GeoDataFrame as RFC 7946 GeoJSON (EPSG:4326, right-hand rings), atomically."""
    out = frame.to_crs(4326)
    with atomic_path(final) as tmp:
        out.to_file(tmp, driver="GeoJSON", RFC7946="YES", WRITE_NAME="NO")
    return final


def write_gpkg(layers: Mapping[str, Any], final: Path, styles: Mapping[str, str] | None = None) -> Path:
    """Write polygon GeoDataFrames as layers of one GeoPackage (MultiPolygon, each in its own CRS),
    with QGIS default styles (`styles`: layer -> QML) in its layer_styles table; atomically."""
    with atomic_path(final) as tmp:
        for name, frame in layers.items():
            frame.to_file(
                tmp, layer=name, driver="GPKG", promote_to_multi=True, geometry_type="MultiPolygon",
                SPATIAL_INDEX="YES", VERSION="1.2",
            )  # fmt: skip
        if styles:
            store_gpkg_styles(tmp, {k: v for k, v in styles.items() if k in layers})
    return final


def store_gpkg_styles(gpkg: Path, styles: Mapping[str, str]) -> None:
    """QGIS's layer_styles table: a style marked useAsDefault loads with the layer in QGIS."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(gpkg)) as db, db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256), "
            "f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT, "
            "useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30), update_time DATETIME "
            "DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
        )
        for layer, qml in styles.items():
            (geom_col,) = db.execute(
                "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)
            ).fetchone()
            db.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, owner) "
                "VALUES ('', '', ?, ?, ?, ?, '', 1, 'Vigía default style', 'vigia')",
                (layer, geom_col, layer, qml),
            )
        # Register the table as a plain attribute table, as GDAL and QGIS do.
        db.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier) "
            "VALUES ('layer_styles', 'attributes', 'layer_styles')"
        )


def write_text(text: str, final: Path) -> Path:
    """Write a text file (style, project, report) atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return final
