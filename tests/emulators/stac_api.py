"""A STAC API emulator in the shape of Earth Search v1: landing page, conformance, collections, and
item search (GET + POST) with bbox/intersects, datetime, `query` on properties, limit and next-link
paging. Items are Sentinel-2 L2A scenes whose COG assets live on a `FileServer`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
import rasterio
from shapely.geometry import box, mapping, shape

from imagery.sources.local import open_scene
from tests.emulators.faults import Faults
from tests.emulators.file_server import FileServer
from tests.emulators.http import EmulatorServer, FaultyHandler

COLLECTION = "sentinel-2-l2a"
#: Earth Search v1 asset keys of the bands Vigía reads.
EARTH_SEARCH_ASSETS = {
    "B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "B11": "swir16", "B12": "swir22", "SCL": "scl",
}  # fmt: skip
CONFORMS_TO = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]
_COG = "image/tiff; application=geotiff; profile=cloud-optimized"
_OPS = {
    "eq": lambda a, b: a == b, "neq": lambda a, b: a != b, "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
    "in": lambda a, b: a in b,
}  # fmt: skip


def cloud_cover_from_scl(path: Path) -> float:
    """Percent of the scene's valid pixels classed cloud (8, 9) or cirrus (10) in its SCL file."""
    with rasterio.open(path) as src:
        scl = src.read(1)
    valid = scl > 0
    return round(100.0 * float(np.isin(scl[valid], (8, 9, 10)).mean()) if valid.any() else 100.0, 2)


def scene_item(
    folder: Path, files: FileServer, collection: str = COLLECTION, item_id: str | None = None,
    **properties: Any,
) -> dict:  # fmt: skip
    """An Earth Search v1 style item for a local scene folder whose files `files` serves;
    `properties` override the item's properties."""
    scene = open_scene(folder)
    with rasterio.open(scene.assets["B02"]) as src:
        tags, epsg = src.tags(), src.crs.to_epsg()
    platform = tags.get("SPACECRAFT_NAME", "Sentinel-2A").lower()
    item_id = item_id or f"S2{platform[-1].upper()}_18LTM_{scene.acquired:%Y%m%d}_0_L2A"
    offset_dn = scene.boa_offset
    assets = {
        EARTH_SEARCH_ASSETS[band]: {
            "href": files.href(Path(href)),
            "type": _COG,
            "title": band,
            "roles": ["data"],
            "eo:bands": [] if band == "SCL" else [{"name": band}],
            "raster:bands": [
                {"nodata": 0, "data_type": "uint8" if band == "SCL" else "uint16"}
                | ({} if band == "SCL" else {"scale": 0.0001, "offset": offset_dn / 10000})
            ],
        }  # fmt: skip
        for band, href in scene.assets.items()
        if band in EARTH_SEARCH_ASSETS
    }
    footprint = scene.footprint
    props = {
        "datetime": f"{scene.acquired.isoformat()}T15:26:39.024000Z",
        "platform": platform, "constellation": "sentinel-2", "instruments": ["msi"],
        "eo:cloud_cover": cloud_cover_from_scl(Path(scene.assets["SCL"])) if scene.has_scl else 0.0,
        "proj:epsg": epsg, "mgrs:utm_zone": 18, "mgrs:latitude_band": "L", "mgrs:grid_square": "TM",
        "grid:code": "MGRS-18LTM", "s2:processing_baseline": scene.processing_baseline,
        "s2:product_type": "S2MSI2A", "earthsearch:boa_offset_applied": False,
    } | properties  # fmt: skip
    return {
        "type": "Feature", "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        ],
        "id": item_id, "collection": collection, "geometry": mapping(footprint),
        "bbox": list(footprint.bounds), "properties": props, "assets": assets, "links": [],
    }  # fmt: skip


class StacApi(EmulatorServer):
    """The STAC API at http://127.0.0.1:PORT/v1 serving `items` (one collection)."""

    def __init__(
        self, items: Sequence[dict], collection: str = COLLECTION, faults: Faults | None = None,
        prefix: str = "/v1", max_limit: int = 100,
    ) -> None:  # fmt: skip
        self.items = sorted(items, key=lambda i: (i["properties"]["datetime"], i["id"]))
        self.collection = collection
        self.prefix = prefix
        self.max_limit = max_limit
        super().__init__(_StacHandler, faults)

    @property
    def root(self) -> str:
        """The API root URL (what `stac_url` is set to)."""
        return self.url + self.prefix

    def landing_page(self) -> dict:
        root = self.root
        links = [
            {"rel": "self", "href": root, "type": "application/json"},
            {"rel": "root", "href": root, "type": "application/json"},
            {"rel": "conformance", "href": f"{root}/conformance", "type": "application/json"},
            {"rel": "data", "href": f"{root}/collections", "type": "application/json"},
            {"rel": "search", "href": f"{root}/search", "type": "application/geo+json", "method": "GET"},
            {"rel": "search", "href": f"{root}/search", "type": "application/geo+json", "method": "POST"},
            {"rel": "child", "href": f"{root}/collections/{self.collection}", "type": "application/json"},
        ]
        return {
            "type": "Catalog", "id": "earth-search-emulator", "stac_version": "1.0.0",
            "title": "Earth Search emulator", "description": "STAC API emulator for tests",
            "conformsTo": CONFORMS_TO, "links": links,
        }  # fmt: skip

    def collection_doc(self) -> dict:
        root = self.root
        times = [i["properties"]["datetime"] for i in self.items] or [None]
        return {
            "type": "Collection", "id": self.collection, "stac_version": "1.0.0",
            "description": "Sentinel-2 L2A COGs (emulated)", "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                       "temporal": {"interval": [[times[0], times[-1]]]}},
            "links": [
                {"rel": "self", "href": f"{root}/collections/{self.collection}"},
                {"rel": "root", "href": root}, {"rel": "parent", "href": root},
                {"rel": "items", "href": f"{root}/collections/{self.collection}/items"},
            ],
        }  # fmt: skip

    def search(self, params: dict[str, Any], method: str) -> dict:
        """One page of an item search."""
        matched = [i for i in self.items if _matches(i, params, self.collection)]
        limit = max(1, min(int(params.get("limit") or 10), self.max_limit))
        start = int(params.get("token") or 0)
        page = matched[start : start + limit]
        root = self.root
        features = [
            i
            | {
                "links": [
                    {"rel": "self", "href": f"{root}/collections/{i['collection']}/items/{i['id']}"},
                    {"rel": "collection", "href": f"{root}/collections/{i['collection']}"},
                    {"rel": "root", "href": root},
                ]
            }  # fmt: skip
            for i in page
        ]
        links: list[dict[str, Any]] = [{"rel": "root", "href": root}]
        if start + limit < len(matched):
            following = {**params, "token": start + limit}
            if method == "POST":
                links.append({"rel": "next", "href": f"{root}/search", "method": "POST",
                              "body": following, "merge": False, "type": "application/geo+json"})  # fmt: skip
            else:
                query = {k: _query_value(v) for k, v in following.items()}
                links.append({"rel": "next", "href": f"{root}/search?{urlencode(query, doseq=False)}",
                              "method": "GET", "type": "application/geo+json"})  # fmt: skip
        return {
            "type": "FeatureCollection", "features": features, "links": links,
            "numberMatched": len(matched), "numberReturned": len(features),
        }  # fmt: skip


def _query_value(value: Any) -> str:
    """A search parameter as a GET query string holds it: lists comma-joined, objects as JSON."""
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _get_params(query: str) -> dict[str, Any]:
    """GET search parameters as the POST body would hold them."""
    raw = {k: v[-1] for k, v in parse_qs(query).items()}
    params: dict[str, Any] = dict(raw)
    if "bbox" in raw:
        params["bbox"] = [float(v) for v in raw["bbox"].split(",")]
    if "collections" in raw:
        params["collections"] = raw["collections"].split(",")
    if "ids" in raw:
        params["ids"] = raw["ids"].split(",")
    for key in ("intersects", "query"):
        if key in raw:
            params[key] = json.loads(raw[key])
    return params


def _instant(text: str, end: bool) -> datetime | None:
    if text in ("", ".."):
        return None
    if len(text) == 10:
        text += "T23:59:59.999999Z" if end else "T00:00:00Z"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _matches(item: dict, params: dict[str, Any], collection: str) -> bool:
    if params.get("collections") and item["collection"] not in params["collections"]:
        return False
    if params.get("ids") and item["id"] not in params["ids"]:
        return False
    geom = shape(item["geometry"])
    if params.get("bbox") and not geom.intersects(box(*params["bbox"][:4])):
        return False
    if params.get("intersects") and not geom.intersects(shape(params["intersects"])):
        return False
    if params.get("datetime"):
        when = _instant(item["properties"]["datetime"], end=False)
        assert when is not None
        parts = str(params["datetime"]).split("/")
        lo, hi = _instant(parts[0], end=False), _instant(parts[-1], end=True)
        if (lo is not None and when < lo) or (hi is not None and when > hi):
            return False
    for prop, ops in (params.get("query") or {}).items():
        value = item["properties"].get(prop)
        for op, ref in ops.items():
            if value is None or not _OPS[op](value, ref):
                return False
    return True


class _StacHandler(FaultyHandler):
    server: StacApi

    def _route(self) -> str | None:
        path = urlsplit(self.path).path.rstrip("/")
        prefix = self.server.prefix.rstrip("/")
        return path[len(prefix) :] if path.startswith(prefix) else None

    def do_GET(self) -> None:
        fault = self.fault()
        if fault is not None and fault.kind != "truncated":
            return
        truncate = fault is not None
        route, api = self._route(), self.server
        if route == "":
            self.send_json(api.landing_page(), truncate=truncate)
        elif route == "/conformance":
            self.send_json({"conformsTo": CONFORMS_TO}, truncate=truncate)
        elif route == "/collections":
            self.send_json({"collections": [api.collection_doc()], "links": []}, truncate=truncate)
        elif route == f"/collections/{api.collection}":
            self.send_json(api.collection_doc(), truncate=truncate)
        elif route == "/search":
            self._answer_search(lambda: api.search(_get_params(urlsplit(self.path).query), "GET"), truncate)
        else:
            self.send_json({"code": 404, "description": f"{self.path}: not found"}, 404)

    def do_POST(self) -> None:
        body = self.read_json_body()
        fault = self.fault()
        if fault is not None and fault.kind != "truncated":
            return
        if self._route() != "/search":
            self.send_json({"code": 404, "description": f"{self.path}: not found"}, 404)
            return
        self._answer_search(lambda: self.server.search(body, "POST"), truncate=fault is not None)

    def _answer_search(self, search: Callable[[], dict], truncate: bool) -> None:
        """A result page, or 400 for parameters the API cannot parse (as a real API answers)."""
        try:
            page = search()
        except (ValueError, KeyError, TypeError) as exc:
            self.send_json({"code": 400, "description": f"bad search parameters: {exc}"}, 400)
            return
        self.send_json(page, truncate=truncate, content_type="application/geo+json")
