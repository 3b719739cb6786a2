"""Scenes from a STAC API (default: Earth Search v1, Sentinel-2 L2A COGs): pystac-client search,
windowed COG reads over HTTP with GDAL, every band of every window kept in the download cache.

Retries: catalogue requests go through `retry.call_with_retries` (Retry-After honoured); COG reads
are retried the same way on GDAL's HTTP errors, timeouts and short reads. GDAL does not expose
response headers, so COG reads back off by the policy's exponential delays.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import rasterio
import requests
from odc.geo.geobox import GeoBox
from pystac_client import Client
from pystac_client.stac_api_io import StacApiIO
from shapely.geometry import shape

from imagery.aoi import AOI
from imagery.errors import InputError, SourceError
from imagery.sentinel2 import boa_offset
from imagery.sources.base import Scene
from imagery.sources.cache import FetchCache, search_settled, validate_raster, write_array_tif
from imagery.sources.local import read_raw_band, read_scene_bands, read_scene_dn
from imagery.sources.raster import exactly_into
from imagery.sources.retry import RetryPolicy, TransientError, call_with_retries, http_session, raise_for_http

#: Earth Search v1 asset keys -> Sentinel-2 band ids (catalogues that key assets by band id work too).
ASSET_BANDS: dict[str, str] = {
    "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05", "rededge2": "B06",
    "rededge3": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09", "swir16": "B11", "swir22": "B12",
    "scl": "SCL",
}  # fmt: skip
_BAND_ID = re.compile(r"^(B0[1-9]|B1[0-2]|B8A|SCL)$", re.I)
_HTTP_STATUS = re.compile(r"HTTP response code: (\d{3})")
#: The setting a user fixes when the catalogue or its storage refuses access.
SETTING = "stac_url (VIGIA_STAC_URL)"
#: Bump when the form of a cached band or search changes, so old entries are never misread.
CACHE_VERSION = 1


def band_of_asset(key: str) -> str | None:
    """The Sentinel-2 band an asset key names ('red' -> 'B04', 'B04' -> 'B04', 'red-jp2' -> None)."""
    if key in ASSET_BANDS:
        return ASSET_BANDS[key]
    return key.upper() if _BAND_ID.match(key) else None


def public_href(href: str) -> str:
    """An asset URL without its query string: signed URLs carry rotating tokens there, which must
    neither appear in messages nor make the same asset a new cache entry."""
    return urlsplit(href)._replace(query="", fragment="").geturl()


def scene_from_item(item: Mapping[str, Any], source: str = "stac") -> Scene:
    """A STAC item (as a dict) described as a Scene: date, level, baseline offset, cloud, assets."""
    props = item.get("properties", {})
    when = props.get("datetime") or props.get("start_datetime")
    if not when:
        raise SourceError(f"STAC item {item.get('id')}: no datetime")
    acquired = datetime.fromisoformat(str(when).replace("Z", "+00:00")).astimezone(UTC).date()
    level = _level(item)
    baseline = props.get("s2:processing_baseline") or props.get("sentinel:processing_baseline")
    applied = props.get("earthsearch:boa_offset_applied", props.get("sentinel:boa_offset_applied", False))
    assets: dict[str, str] = {}
    for key, asset in item.get("assets", {}).items():
        band = band_of_asset(key)
        if band is not None and band not in assets and "jp2" not in str(asset.get("type", "")):
            assets[band] = asset["href"]
    return Scene(
        id=str(item["id"]), source=source, acquired=acquired, level=level,
        processing_baseline=str(baseline) if baseline else None,
        boa_offset=0.0 if applied else boa_offset(str(baseline) if baseline else None, level),
        cloud_cover=props.get("eo:cloud_cover"), footprint_wkt=shape(item["geometry"]).wkt, assets=assets,
    )  # fmt: skip


def _level(item: Mapping[str, Any]) -> str:
    props = item.get("properties", {})
    text = " ".join(
        str(v)
        for v in (
            item.get("id"),
            item.get("collection"),
            props.get("s2:product_type"),
            props.get("processing:level"),
        )  # fmt: skip
    ).upper()
    return "L1C" if ("L1C" in text or "MSI1C" in text) and "L2A" not in text else "L2A"


class RetryingStacIO(StacApiIO):
    """pystac-client's HTTP layer with Vigía's retry policy: 429/5xx/timeouts/short bodies retried
    (Retry-After honoured), 401/403 end at once naming the setting, other errors end at once."""

    def __init__(self, policy: RetryPolicy) -> None:
        super().__init__(timeout=policy.request_timeout_s, max_retries=None)
        self.session = http_session()
        self.policy = policy

    def request(
        self,
        href: str,
        method: str | None = None,
        headers: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> str:
        """The response body of one catalogue request, retried within the policy."""
        method = (method or "GET").upper()
        what = f"STAC {method} {public_href(href)}"
        return call_with_retries(lambda: self._once(href, method, headers, parameters), self.policy, what)

    def _once(
        self, href: str, method: str, headers: dict[str, str] | None, parameters: dict[str, Any] | None
    ) -> str:
        what = f"STAC {method} {public_href(href)}"
        body = {"json": parameters} if method in ("POST", "PUT", "PATCH") else {"params": parameters or {}}
        try:
            resp = self.session.request(method, href, headers=headers, timeout=self.timeout, **body)
        except (requests.ConnectionError, requests.Timeout):
            raise
        except requests.RequestException as exc:  # a body cut short, a broken chunk
            raise TransientError(f"{what}: {type(exc).__name__}") from None
        raise_for_http(resp.status_code, resp.headers, what, SETTING)
        if not 200 <= resp.status_code < 300:
            raise SourceError(f"{what}: HTTP {resp.status_code}")
        try:
            text = resp.content.decode("utf-8")
            json.loads(text)
        except ValueError:  # includes a body that is not UTF-8
            raise TransientError(f"{what}: response is not complete JSON") from None
        return text


class StacSource:
    """Sentinel-2 L2A scenes from a STAC API; bands read as windowed COG reads, cached on disk."""

    name = "stac"

    def __init__(
        self,
        url: str,
        collection: str,
        cache: FetchCache,
        policy: RetryPolicy | None = None,
        page_size: int = 100,
    ) -> None:
        self.url = url.rstrip("/")
        self.collection = collection
        self.cache = cache
        self.policy = policy or RetryPolicy()
        self.page_size = page_size

    def search(self, aoi: AOI, start: date, end: date, max_cloud: float = 100.0) -> list[Scene]:
        """Items of the collection acquired in [start, end] (UTC days) intersecting the AOI, with
        catalogue cloud cover <= max_cloud; oldest first. The result for a settled period (ended
        more than cache.SETTLED_AFTER_DAYS ago) is cached; a recent period is always asked afresh."""
        parts = {
            "source": self.name, "v": CACHE_VERSION, "search": self.url, "collection": self.collection,
            "aoi": aoi.geometry.wkt, "start": start.isoformat(), "max_cloud": max_cloud,
        }  # fmt: skip
        return search_settled(
            self.cache, parts, end, lambda: self.search_catalogue(aoi, start, end, max_cloud)
        )

    def search_catalogue(self, aoi: AOI, start: date, end: date, max_cloud: float = 100.0) -> list[Scene]:
        """The catalogue's answer (see `search`), every result page followed."""
        client = Client.open(self.url, stac_io=RetryingStacIO(self.policy))
        search = client.search(
            collections=[self.collection], intersects=aoi.to_geojson(),
            datetime=[datetime.combine(start, time.min, UTC), datetime.combine(end, time.max, UTC)],
            query={"eo:cloud_cover": {"lte": max_cloud}}, limit=self.page_size, method="POST",
        )  # fmt: skip
        scenes = [scene_from_item(item, self.name) for item in search.items_as_dicts()]
        return sorted(scenes, key=lambda s: (s.acquired, s.id))

    def read(
        self, scene: Scene, bands: Sequence[str], gbox: GeoBox, out: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Bands resampled onto `gbox`, each from the cache or fetched once and cached."""
        return read_scene_bands(scene, bands, gbox, self.cached_band, out=out)

    def read_dn(self, scene: Scene, bands: Sequence[str], gbox: GeoBox, out: np.ndarray) -> None:
        """Spectral bands resampled onto `gbox` as digital numbers, from the same cache as `read`
        (see `local.read_scene_dn`)."""
        read_scene_dn(scene, bands, gbox, out, self.cached_band)

    def band_key(self, scene: Scene, band: str, gbox: GeoBox) -> dict[str, Any]:
        """What a cached band is addressed by: the asset URL and the exact grid window."""
        a = gbox.affine
        return {
            "source": self.name, "v": CACHE_VERSION, "item": scene.id, "band": band,
            "href": public_href(scene.assets[band]), "crs": str(gbox.crs),
            "affine": [a.a, a.b, a.c, a.d, a.e, a.f],
            "shape": [gbox.shape.y, gbox.shape.x],
        }  # fmt: skip

    def cached_band(self, scene: Scene, band: str, gbox: GeoBox, out: np.ndarray | None = None) -> np.ndarray:
        """One band's raw values on `gbox`: from the cache, else downloaded, validated and cached;
        into `out` when given (`raster.UnfitValues` when its type cannot hold them)."""
        shape = (gbox.shape.y, gbox.shape.x)
        path = self.cache.get_or_fetch(
            self.band_key(scene, band, gbox),
            fetch=lambda tmp: self._download(scene, band, gbox, tmp),
            validate=lambda tmp: validate_raster(tmp, shape=shape),
        )
        with rasterio.open(path) as src:
            if out is not None and out.dtype == src.dtypes[0]:
                return src.read(1, out=out)
            values = src.read(1)
        return values if out is None else exactly_into(out, values, str(path))

    def _download(self, scene: Scene, band: str, gbox: GeoBox, tmp: Path) -> None:
        what = f"{scene.id} {band} ({public_href(scene.assets[band])})"
        raw = call_with_retries(lambda: self._read_remote(scene, band, gbox, what), self.policy, what)
        write_array_tif(tmp, raw, {"crs": str(gbox.crs), "transform": gbox.affine, "nodata": 0})

    def _read_remote(self, scene: Scene, band: str, gbox: GeoBox, what: str) -> np.ndarray:
        """One GDAL read of a remote band; its HTTP faults turned into retryable or final errors."""
        href = scene.assets[band]
        timeout = max(1, math.ceil(self.policy.request_timeout_s))
        env = {
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listings or sidecar probes
            "CPL_VSIL_CURL_NON_CACHED": f"/vsicurl/{href}",  # a failed try must not be remembered
            "GDAL_HTTP_TIMEOUT": timeout, "GDAL_HTTP_CONNECTTIMEOUT": timeout, "GDAL_HTTP_MAX_RETRY": 0,
        }  # fmt: skip
        try:
            with rasterio.Env(**env):
                return read_raw_band(scene, band, gbox)
        except InputError as exc:
            message = str(exc)
            if "not a readable" not in message:
                raise
            status = _HTTP_STATUS.search(message)
            if status:
                raise_for_http(int(status.group(1)), {}, what, SETTING)
            raise TransientError(f"{what}: {message.split('(', 1)[-1].rstrip(')')}") from None
