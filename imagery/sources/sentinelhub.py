"""Sentinel Hub / Copernicus Data Space: Catalog API search and Process API reads via sentinelhub-py.

Endpoints come from `sh_base_url` and `sh_token_url`, so the same code talks to Sentinel Hub, to
the Copernicus Data Space Ecosystem (https://sh.dataspace.copernicus.eu and its identity server)
or to any service that speaks the same API. Each date becomes one scene (the Process API mosaics
the day's granules, so overlapping granules are never counted twice); reflectance comes back
harmonised (the 04.00 offset removed by the service). Every response is cached by its request
(never by the credentials) and validated with GDAL before it is cached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from requests import HTTPError
from sentinelhub import CRS as SHCRS
from sentinelhub import (
    BBox,
    DataCollection,
    Geometry,
    MimeType,
    MosaickingOrder,
    ResamplingType,
    SentinelHubCatalog,
    SentinelHubDownloadClient,
    SentinelHubRequest,
    SentinelHubSession,
    SHConfig,
)
from sentinelhub.exceptions import DownloadFailedException, OutOfRequestsException
from shapely.geometry import shape
from shapely.ops import unary_union

from imagery.aoi import AOI
from imagery.config import Settings
from imagery.errors import VigiaError
from imagery.sources.base import Scene
from imagery.sources.cache import CorruptPayload, FetchCache, search_settled, validate_raster
from imagery.sources.retry import (
    RetryPolicy,
    SourceAuthError,
    TransientError,
    call_with_retries,
    http_fault,
)

T = TypeVar("T")

CREDENTIAL_SETTINGS = "VIGIA_SH_CLIENT_ID / VIGIA_SH_CLIENT_SECRET (or the Prefect Secret block)"
#: Bands this source can deliver (the Level-2A collection's reflectance bands plus SCL).
L2A_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12", "SCL")
#: One OAuth session per endpoint and credentials in this process (the client's own cache is keyed
#: on the client id alone, so a changed secret would silently reuse the old token).
_SESSIONS: dict[tuple[str, str, str], SentinelHubSession] = {}


def _evalscript(bands: Sequence[str], categorical: bool) -> str:
    """Reflectance (float32) of `bands` plus dataMask, or the SCL codes as uint8."""
    if categorical:
        return (
            '//VERSION=3\nfunction setup() {\n  return {input: [{bands: ["SCL"], units: "DN"}],\n'
            '          output: {bands: 1, sampleType: "UINT8"}};\n}\n'
            "function evaluatePixel(s) { return [s.SCL]; }\n"
        )
    names = ", ".join(f'"{b}"' for b in [*bands, "dataMask"])
    values = ", ".join(f"s.{b}" for b in [*bands, "dataMask"])
    return (
        f'//VERSION=3\nfunction setup() {{\n  return {{input: [{{bands: [{names}], units: "REFLECTANCE"}}],\n'
        f'          output: {{bands: {len(bands) + 1}, sampleType: "FLOAT32"}}}};\n}}\n'
        f"function evaluatePixel(s) {{ return [{values}]; }}\n"
    )


class SentinelHubSource:
    """Sentinel-2 L2A from a Sentinel Hub compatible service (Catalog + Process APIs)."""

    name = "sentinelhub"

    def __init__(self, settings: Settings) -> None:
        if settings.sh_client_id is None or settings.sh_client_secret is None:
            raise VigiaError(f"source sentinelhub: no credentials: set {CREDENTIAL_SETTINGS}")
        self.settings = settings
        self.policy: RetryPolicy = settings.retry
        self.cache = FetchCache(Path(settings.cache_dir) / "sentinelhub")

    # -- configuration ---------------------------------------------------------------------------

    def _config(self) -> SHConfig:
        s = self.settings
        assert s.sh_client_id is not None and s.sh_client_secret is not None
        config = SHConfig(use_defaults=True)
        config.sh_client_id = s.sh_client_id.get_secret_value()
        config.sh_client_secret = s.sh_client_secret.get_secret_value()
        config.sh_base_url = s.sh_base_url.rstrip("/")
        config.sh_token_url = s.sh_token_url
        config.max_download_attempts = 1  # 5xx and connection faults: retried by call_with_retries
        config.max_retries = self.policy.max_attempts  # 429: the client waits Retry-After, this often
        config.download_timeout_seconds = self.policy.request_timeout_s
        return config

    def _authorised_config(self) -> SHConfig:
        """The client configuration, with a session for these credentials registered for the client."""
        config = self._config()
        secret = hashlib.sha256(config.sh_client_secret.encode()).hexdigest()
        key = (config.sh_token_url, config.sh_client_id, secret)
        if key not in _SESSIONS:
            _SESSIONS[key] = self._call(
                lambda: SentinelHubSession(config=config), f"POST {config.sh_token_url} (OAuth token)"
            )
        SentinelHubDownloadClient.cache_session(_SESSIONS[key])
        return config

    def _collection(self) -> DataCollection:
        """Sentinel-2 L2A served from `sh_base_url` (the stock definition is pinned to one service)."""
        url = self.settings.sh_base_url.rstrip("/")
        name = "VIGIA_S2L2A_" + hashlib.sha1(url.encode()).hexdigest()[:10]
        if name in DataCollection.__members__:
            return DataCollection[name]
        return DataCollection.SENTINEL2_L2A.define_from(name, service_url=url)

    def _call(self, fn: Callable[[], T], what: str) -> T:
        """`fn()` with the run's retry policy; the client's faults become ours, with no secrets."""

        def attempt() -> T:
            try:
                return fn()
            except DownloadFailedException as exc:
                raise _translate(exc, what) from None
            except OutOfRequestsException:
                raise TransientError(f"{what}: HTTP 429 (rate limit)") from None
            except CorruptPayload as exc:
                raise TransientError(f"{what}: {exc}") from None
            except Exception as exc:  # oauthlib's errors on the token endpoint
                if type(exc).__name__ in {
                    "InvalidClientError",
                    "UnauthorizedClientError",
                    "InvalidGrantError",
                }:
                    raise SourceAuthError(
                        f"source sentinelhub: {self.settings.sh_token_url} refused the credentials: "
                        f"check {CREDENTIAL_SETTINGS}"
                    ) from None
                if isinstance(exc, HTTPError) and exc.response is not None:
                    fault = http_fault(
                        exc.response.status_code, exc.response.headers, what, CREDENTIAL_SETTINGS
                    )
                    if fault is not None:
                        raise fault from None
                raise

        return call_with_retries(attempt, self.policy, what)

    # -- catalogue ---------------------------------------------------------------------------

    def search(self, aoi: AOI, start: date, end: date, max_cloud: float = 100.0) -> list[Scene]:
        """One scene per acquisition date in [start, end] with catalogue cloud cover <= max_cloud."""
        key = {
            "kind": "catalog", "url": self.settings.sh_base_url, "collection": "sentinel-2-l2a",
            "aoi": aoi.geometry.wkt, "start": start.isoformat(), "max_cloud": max_cloud,
        }  # fmt: skip

        def run() -> list[Scene]:
            catalog = SentinelHubCatalog(config=self._authorised_config())
            results = catalog.search(
                self._collection(), time=(start.isoformat(), end.isoformat()),
                geometry=Geometry(aoi.geometry, SHCRS.WGS84), filter=f"eo:cloud_cover <= {max_cloud}",
                fields={"include": ["id", "geometry", "properties.datetime", "properties.eo:cloud_cover"]},
            )  # fmt: skip
            return _scenes_by_day(list(results))

        what = f"POST {self.settings.sh_base_url}/api/v1/catalog/1.0.0/search"
        return search_settled(self.cache, key, end, lambda: self._call(run, what))

    # -- pixels ------------------------------------------------------------------------------

    def read(
        self, scene: Scene, bands: Sequence[str], gbox: GeoBox, out: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Bands on `gbox`: reflectance float32 (NaN outside the data; into out[i] for band i when
        `out` is given), SCL uint8."""
        unknown = [b for b in bands if b not in L2A_BANDS]
        if unknown:
            raise VigiaError(
                f"source sentinelhub: unknown band(s) {', '.join(unknown)} (expected {L2A_BANDS})"
            )
        spectral = [b for b in bands if b != "SCL"]
        layers: dict[str, np.ndarray] = {}
        if spectral:
            data = self._fetch(scene, spectral, gbox, categorical=False)
            valid = data[-1] > 0
            for i, band in enumerate(spectral):
                layer = np.empty(data[i].shape, np.float32) if out is None else out[list(bands).index(band)]
                layer[...] = data[i]
                layer[~valid] = np.nan
                layers[band] = layer
        if "SCL" in bands:
            layers["SCL"] = self._fetch(scene, ["SCL"], gbox, categorical=True)[0].astype(np.uint8)
        return layers

    def _fetch(self, scene: Scene, bands: Sequence[str], gbox: GeoBox, *, categorical: bool) -> np.ndarray:
        """One Process API response for a day and window, from the cache or the service."""
        height, width = gbox.shape.y, gbox.shape.x
        left, bottom, right, top = (float(v) for v in gbox.boundingbox)
        bbox = (left, bottom, right, top)
        epsg = gbox.crs.epsg if gbox.crs is not None else None
        if epsg is None:
            raise VigiaError(f"source sentinelhub: the run grid needs an EPSG CRS (got {gbox.crs})")
        resampling = "NEAREST" if categorical else "BILINEAR"
        key = {
            "kind": "process", "url": self.settings.sh_base_url, "collection": "sentinel-2-l2a",
            "day": scene.acquired.isoformat(), "bands": list(bands), "categorical": categorical,
            "epsg": epsg, "bbox": bbox, "size": [width, height], "resampling": resampling,
        }  # fmt: skip

        def download(path: Path) -> None:
            config = self._authorised_config()
            request = SentinelHubRequest(
                evalscript=_evalscript(bands, categorical),
                input_data=[
                    SentinelHubRequest.input_data(
                        data_collection=self._collection(),
                        time_interval=(scene.acquired.isoformat(), scene.acquired.isoformat()),
                        mosaicking_order=MosaickingOrder.LEAST_CC,
                        upsampling=ResamplingType(resampling), downsampling=ResamplingType(resampling),
                    )
                ],
                responses=[SentinelHubRequest.output_response("default", MimeType.TIFF)],
                bbox=BBox(bbox, crs=SHCRS(epsg)), size=(width, height), config=config,
            )  # fmt: skip
            client = SentinelHubDownloadClient(config=config)
            response = client.download(request.download_list, decode_data=False, show_progress=False)[0]
            path.write_bytes(response.content)

        def validate(path: Path) -> None:
            validate_raster(path, shape=(height, width))

        what = f"POST {self.settings.sh_base_url}/api/v1/process ({scene.acquired}, {','.join(bands)})"
        cached = self._call(lambda: self.cache.get_or_fetch(key, download, validate), what)
        with rasterio.open(cached) as src:
            return src.read()


def _translate(exc: DownloadFailedException, what: str) -> Exception:
    """The client's failure as ours: HTTP statuses mapped by `http_fault`, anything else transient."""
    response = getattr(exc.request_exception, "response", None)
    if response is not None and (
        fault := http_fault(response.status_code, response.headers, what, CREDENTIAL_SETTINGS)
    ):
        return fault
    return TransientError(f"{what}: {type(exc.request_exception).__name__}")


def _scenes_by_day(items: Sequence[dict[str, Any]]) -> list[Scene]:
    """Catalogue items (granules) grouped into one scene per acquisition date."""
    by_day: dict[date, list[dict[str, Any]]] = {}
    for item in items:
        when = datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00")).date()
        by_day.setdefault(when, []).append(item)
    scenes = []
    for day, group in sorted(by_day.items()):
        footprint = unary_union([shape(i["geometry"]) for i in group])
        clouds = [i["properties"].get("eo:cloud_cover") for i in group]
        known = [float(c) for c in clouds if c is not None]
        scenes.append(
            Scene(
                id=f"S2L2A_{day:%Y%m%d}", source="sentinelhub", acquired=day, level="L2A",
                cloud_cover=max(known) if known else None, footprint_wkt=footprint.wkt,
                assets={b: f"sentinelhub:sentinel-2-l2a/{day.isoformat()}/{b}" for b in L2A_BANDS},
                granules=sorted(i["id"] for i in group),
            )
        )  # fmt: skip
    return scenes
