"""Accuracy of a change_class raster against a truth raster, on the truth's grid."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from pydantic import BaseModel

from imagery.errors import InputError
from imagery.export import MAN_MADE_CLASSES
from imagery.sources.raster import read_band


class Scores(BaseModel):
    """Pixel counts and scores of man-made change (classes 1-3) against truth."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        """Share of predicted change that is true change."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """Share of true change that was found."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def iou(self) -> float:
        """Intersection over union of predicted and true change."""
        return self.tp / (self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else 0.0

    def summary(self) -> dict[str, float | int]:
        """Scores and counts as a flat dict."""
        return {
            "precision": round(self.precision, 4), "recall": round(self.recall, 4),
            "f1": round(self.f1, 4), "iou": round(self.iou, 4),
            "tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn,
        }  # fmt: skip


def score_arrays(predicted_classes: np.ndarray, truth: np.ndarray, truth_nodata: int | None = None) -> Scores:
    """Count man-made change agreement; truth > 0 (and not nodata) is change in 0/1 or class truth."""
    keep = np.ones(truth.shape, bool) if truth_nodata is None else truth != truth_nodata
    pred = np.isin(predicted_classes, MAN_MADE_CLASSES) & keep
    true = np.isin(truth, MAN_MADE_CLASSES) & keep
    tp = int((pred & true).sum())
    fp = int((pred & ~true).sum())
    fn = int((~pred & true).sum())
    return Scores(tp=tp, fp=fp, fn=fn, tn=int(keep.sum()) - tp - fp - fn)


def evaluate(predicted: Path, truth: Path) -> Scores:
    """Score a change_class raster against truth, reprojecting the prediction onto the truth grid."""
    for path in (predicted, truth):
        if not Path(path).exists():
            raise InputError(f"{path}: no such file")
    try:
        with rasterio.open(truth) as src:
            truth_arr = src.read(1)
            nodata = int(src.nodata) if src.nodata is not None else None
            gbox = GeoBox.from_rio(src)
    except rasterio.errors.RasterioError:
        raise InputError(f"{truth}: not a readable raster") from None
    pred = read_band(str(predicted), gbox, categorical=True)
    return score_arrays(pred, truth_arr, nodata)


def pooled(scores: Iterable[Scores]) -> Scores:
    """Scores over all pixels of several scenes (sums of counts, not a mean of ratios)."""
    items = list(scores)
    return Scores(
        tp=sum(s.tp for s in items), fp=sum(s.fp for s in items),
        fn=sum(s.fn for s in items), tn=sum(s.tn for s in items),
    )  # fmt: skip
