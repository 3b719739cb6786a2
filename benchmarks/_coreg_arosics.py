"""Run GFZ AROSICS on one GeoTIFF pair; print one JSON line. Runs in the separate AROSICS venv.

Usage: python _coreg_arosics.py REF.tif TGT.tif {local|global} WINDOW GRID MAX_SHIFT CPUS
Shifts are reported in AROSICS's own sign (x_shift_px, y_shift_px as its tables give them);
the harness converts them to Vigía's convention.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    """Parse argv, run COREG or COREG_LOCAL, print timing and the mean shift of kept points."""
    ref, tgt, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    window, grid, max_shift, cpus = (
        int(sys.argv[4]),
        int(sys.argv[5]),
        float(sys.argv[6]),
        int(sys.argv[7]),
    )
    from arosics import COREG, COREG_LOCAL

    t0 = time.perf_counter()
    if mode == "global":
        cr = COREG(ref, tgt, ws=(window, window), max_shift=max_shift, nodata=(-9999, -9999), q=True)
        cr.calculate_spatial_shifts()
        out = {"x_shift_px": cr.x_shift_px, "y_shift_px": cr.y_shift_px, "n_points": 1}
    else:
        crl = COREG_LOCAL(
            ref,
            tgt,
            grid_res=grid,
            window_size=(window, window),
            max_shift=max_shift,
            nodata=(-9999, -9999),
            CPUs=cpus,
            q=True,
            progress=False,
        )
        table = crl.CoRegPoints_table
        kept = table[(table["OUTLIER"] == False) & (table["X_SHIFT_PX"] != -9999)]  # noqa: E712
        out = {
            "x_shift_px": float(kept["X_SHIFT_PX"].mean()),
            "y_shift_px": float(kept["Y_SHIFT_PX"].mean()),
            "x_shift_px_median": float(kept["X_SHIFT_PX"].median()),
            "y_shift_px_median": float(kept["Y_SHIFT_PX"].median()),
            "n_points": len(kept),
            "n_grid": len(table),
        }
    out["seconds"] = time.perf_counter() - t0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
