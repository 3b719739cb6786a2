"""An RFC 7946 GeoJSON checker for the published polygon layers (what GDAL's RFC7946 mode promises)."""

from __future__ import annotations

from itertools import pairwise
from typing import Any


def ring_area(ring: list[list[float]]) -> float:
    """Signed shoelace area: positive when counter-clockwise."""
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0, *_), (x1, y1, *_) in pairwise(ring))


def polygon_problems(rings: list[list[list[float]]], where: str) -> list[str]:
    problems = []
    for i, ring in enumerate(rings):
        if len(ring) < 4 or ring[0] != ring[-1]:
            problems.append(f"{where} ring {i}: not a closed linear ring of >= 4 positions")
            continue
        for lon, lat, *_ in ring:
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                problems.append(f"{where} ring {i}: position ({lon}, {lat}) is not lon/lat")
                break
        area = ring_area(ring)
        if i == 0 and area <= 0:
            problems.append(f"{where}: exterior ring is not counter-clockwise (right-hand rule)")
        if i > 0 and area >= 0:
            problems.append(f"{where} hole {i}: not clockwise (right-hand rule)")
    return problems


def rfc7946_problems(doc: dict[str, Any]) -> list[str]:
    """Everything in a polygon FeatureCollection that breaks RFC 7946 (empty list: conforms)."""
    problems = []
    if doc.get("type") != "FeatureCollection":
        problems.append("top level is not a FeatureCollection")
    if "crs" in doc:
        problems.append("has a 'crs' member (RFC 7946 section 4: always WGS 84 lon/lat, no crs)")
    for n, feature in enumerate(doc.get("features", [])):
        where = f"feature {n}"
        if feature.get("type") != "Feature" or "properties" not in feature:
            problems.append(f"{where}: not a Feature with properties")
        if "crs" in feature:
            problems.append(f"{where}: has a 'crs' member")
        geom = feature.get("geometry") or {}
        if geom.get("type") == "Polygon":
            problems += polygon_problems(geom["coordinates"], where)
        elif geom.get("type") == "MultiPolygon":
            for k, poly in enumerate(geom["coordinates"]):
                problems += polygon_problems(poly, f"{where} part {k}")
        else:
            problems.append(f"{where}: geometry {geom.get('type')} is not a polygon")
    return problems
