"""Output encoding benchmark: size and write time of the published rasters per codec and level.

    python benchmarks/compression.py RUN_DIR [--threads 1] [--json out.json]

Re-encodes ``RUN_DIR/change_score.tif`` and ``RUN_DIR/change_class.tif`` (a published run, e.g.
``data/runs/latest``) as COGs the way ``imagery.export.finish_cog`` writes them (512 px blocks,
overviews, the same predictor) with each codec and level below, and prints seconds and MB.
Decides ``export.COG_OPTIONS`` (docs/performance.md); re-run it when the outputs change.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import rasterio
import rasterio.errors
from rasterio.shutil import copy as rio_copy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imagery.export import COG_OPTIONS

#: Label -> COG creation options. LERC variants bound the absolute error (float score only).
CODECS: dict[str, dict[str, Any]] = {
    "deflate-1": {"COMPRESS": "DEFLATE", "LEVEL": 1},
    "deflate-3": {"COMPRESS": "DEFLATE", "LEVEL": 3},
    "deflate-6": {"COMPRESS": "DEFLATE", "LEVEL": 6},
    "deflate-9": {"COMPRESS": "DEFLATE", "LEVEL": 9},
    "zstd-1": {"COMPRESS": "ZSTD", "LEVEL": 1},
    "zstd-9": {"COMPRESS": "ZSTD", "LEVEL": 9},
    "lzw": {"COMPRESS": "LZW"},
    "lerc_deflate-1e-3": {"COMPRESS": "LERC_DEFLATE", "MAX_Z_ERROR": 1e-3, "LEVEL": 6},
    "lerc_deflate-1e-4": {"COMPRESS": "LERC_DEFLATE", "MAX_Z_ERROR": 1e-4, "LEVEL": 6},
}
LAYERS = {"change_score.tif": ("FLOATING_POINT", "AVERAGE"), "change_class.tif": ("YES", "NEAREST")}


def encode(
    src: Path, dst: Path, codec: dict[str, Any], predictor: str, resampling: str, threads: str
) -> float:
    """Write `src` as a COG with the `codec` options; seconds taken."""
    options = {k: v for k, v in COG_OPTIONS.items() if k not in ("COMPRESS", "LEVEL")}
    options |= dict(codec, PREDICTOR=predictor, RESAMPLING=resampling, NUM_THREADS=threads)
    if codec["COMPRESS"].startswith("LERC"):
        options.pop("PREDICTOR")
    t = time.perf_counter()
    rio_copy(src, dst, driver="COG", **options)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--threads", default="1", help="GDAL NUM_THREADS for the encoder (1: per-core cost)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vigia-codec-") as tmp:
        for name, (predictor, resampling) in LAYERS.items():
            src = args.run_dir / name
            if not src.is_file():
                raise SystemExit(f"{src}: not found (expected a published run folder)")
            with rasterio.open(src) as ds:
                mpx = ds.width * ds.height / 1e6
                raw_mb = mpx * {"float32": 4, "uint8": 1}[ds.dtypes[0]]
            for label, codec in CODECS.items():
                if label.startswith("lerc") and predictor != "FLOATING_POINT":
                    continue
                dst = Path(tmp) / f"{label}-{name}"
                try:
                    seconds = encode(src, dst, codec, predictor, resampling, args.threads)
                except rasterio.errors.RasterioError as exc:
                    print(f"{name} {label}: not available ({exc})")
                    continue
                mb = dst.stat().st_size / 1e6
                rows.append({"layer": name, "codec": label, "seconds": seconds, "mb": mb,
                             "raw_mb": raw_mb, "mpx": mpx})  # fmt: skip
                ratio, speed = raw_mb / mb, raw_mb / seconds
                print(f"{name:18s} {label:18s} {seconds:7.2f} s {mb:8.1f} MB (ratio {ratio:5.2f}, "
                      f"{speed:6.1f} MB/s raw)", flush=True)  # fmt: skip
                dst.unlink()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
