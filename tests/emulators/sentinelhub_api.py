"""A Sentinel Hub emulator on 127.0.0.1 (HTTPS): OAuth2 token, Catalog API search, Process API.

It serves real imagery from a folder of scenes (one sub-folder of per-band GeoTIFFs per scene, as
`imagery.demo` writes them) so the unmodified `sentinelhub` client can run against it:

- `POST /oauth/token`: client-credentials grant; a wrong id/secret gets 401 `invalid_client`.
- `POST /api/v1/catalog/1.0.0/search`: STAC items of the scenes intersecting `bbox`/`intersects`
  within `datetime`, filtered by a CQL2-text `eo:cloud_cover < N` (or <=), paged with `limit` and
  the `context.next` offset.
- `POST /api/v1/process`: renders the bands named in the evalscript's `setup()` input (units DN
  or REFLECTANCE with the L2A offset harmonised away, `dataMask`) for the requested bbox, CRS and
  size as a GeoTIFF of the evalscript's `sampleType`, mosaicking the scenes of the time range.

Faults are queued per endpoint (`token`, `catalog`, `process`) and consumed one per request:
`429` (with Retry-After: 1), `500`, `slow` (sleeps past the client timeout), `truncate` (a cut
GeoTIFF with a consistent Content-Length), `401`, `403`.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds
from rasterio.warp import reproject
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from imagery.sources.local import open_scene
from tests.emulators.tls import self_signed_cert, server_context

CLOUD_CLASSES = (3, 8, 9, 10)
_RESAMPLING = {"NEAREST": Resampling.nearest, "BILINEAR": Resampling.bilinear, "BICUBIC": Resampling.cubic}
_ENDPOINTS = {
    "/oauth/token": "token",
    "/api/v1/catalog/1.0.0/search": "catalog",
    "/api/v1/process": "process",
}
_DTYPES = {"FLOAT32": "float32", "UINT16": "uint16", "UINT8": "uint8", "INT16": "int16", "AUTO": "float32"}


@dataclass
class EmulatedScene:
    """One granule the emulator knows: identity, date, outline, cloud cover, band files, L2A offset."""

    id: str
    acquired: date
    footprint: BaseGeometry
    cloud_cover: float
    bands: dict[str, Path]
    boa_offset: float


def load_scenes(root: Path) -> list[EmulatedScene]:
    """Every scene folder under `root`, with a cloud cover computed from its SCL."""
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        scene = open_scene(folder)
        out.append(
            EmulatedScene(
                id=scene.id, acquired=scene.acquired, footprint=scene.footprint,
                cloud_cover=_cloud_cover(Path(scene.assets["SCL"])) if scene.has_scl else 0.0,
                bands={b: Path(h) for b, h in scene.assets.items()}, boa_offset=scene.boa_offset,
            )
        )  # fmt: skip
    return out


def _cloud_cover(scl_path: Path) -> float:
    with rasterio.open(scl_path) as src:
        scl = src.read(1)
    valid = scl > 0
    return float(100.0 * np.isin(scl[valid], CLOUD_CLASSES).mean()) if valid.any() else 100.0


@dataclass
class SentinelHubEmulator:
    """The emulator's state: scenes, credentials, queued faults and a log of requests."""

    scenes: list[EmulatedScene]
    tls_dir: Path
    client_id: str = "vigia-test-client"
    client_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    faults: dict[str, list[str]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    slow_s: float = 3.0
    page_size: int = 100  # the service's largest page, whatever `limit` asks
    _tokens: set[str] = field(default_factory=set)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        """What `sh_base_url` points at."""
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def token_url(self) -> str:
        """What `sh_token_url` points at."""
        return f"{self.base_url}/oauth/token"

    @property
    def ca_bundle(self) -> Path:
        """The certificate clients must trust (REQUESTS_CA_BUNDLE)."""
        return self.tls_dir / "emulator.crt"

    def count(self, endpoint: str) -> int:
        """How many requests reached an endpoint (`token`, `catalog`, `process`)."""
        return sum(1 for e, _ in self.requests if e == endpoint)

    def start(self) -> SentinelHubEmulator:
        """Serve on a free port in a background thread."""
        cert, key = self_signed_cert(self.tls_dir)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.socket = server_context(cert, key).wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def next_fault(self, endpoint: str) -> str | None:
        """The next queued fault of an endpoint, consumed."""
        queue = self.faults.get(endpoint) or []
        return queue.pop(0) if queue else None

    # -- endpoints -------------------------------------------------------------------------------

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """OAuth2 client-credentials grant."""
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return 401, {"error": "invalid_client", "error_description": "Invalid client credentials"}
        token = _jwt({"azp": self.client_id, "sub": self.client_id, "exp": int(time.time()) + 3600})
        self._tokens.add(token)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600}

    def authorised(self, header: str | None) -> bool:
        """Whether a request carries a token this emulator issued."""
        return bool(header) and header.removeprefix("Bearer ").strip() in self._tokens  # type: ignore[union-attr]

    def search(self, body: dict[str, Any]) -> dict[str, Any]:
        """Catalog API search over the scenes, paged by offset."""
        area = (
            shape(body["intersects"])
            if "intersects" in body
            else box(*body.get("bbox", (-180, -90, 180, 90)))
        )
        start, end = _interval(body.get("datetime"))
        limit, offset = min(int(body.get("limit", 10)), self.page_size), int(body.get("next") or 0)
        max_cloud = _cloud_limit(body.get("filter"))
        hits = [
            s for s in self.scenes
            if s.footprint.intersects(area) and start <= s.acquired <= end and s.cloud_cover <= max_cloud
        ]  # fmt: skip
        page = hits[offset : offset + limit]
        context: dict[str, Any] = {"limit": limit, "returned": len(page)}
        if offset + limit < len(hits):
            context["next"] = offset + limit
        return {
            "type": "FeatureCollection",
            "features": [_item(s) for s in page],
            "links": [],
            "context": context,
        }

    def process(self, body: dict[str, Any]) -> bytes:
        """Process API: the evalscript's input bands over the request's bbox/CRS/size as a GeoTIFF."""
        bounds = body["input"]["bounds"]
        crs = "EPSG:" + bounds["properties"]["crs"].rstrip("/").split("/")[-1]
        width, height = int(body["output"]["width"]), int(body["output"]["height"])
        transform = from_bounds(*bounds["bbox"], width, height)
        data = body["input"]["data"][0]
        start, end = _interval(
            f"{data['dataFilter']['timeRange']['from']}/{data['dataFilter']['timeRange']['to']}"
        )
        processing = data.get("processing", {})
        up = _RESAMPLING[processing.get("upsampling", "NEAREST")]
        down = _RESAMPLING[processing.get("downsampling", "NEAREST")]
        bands, units, dtype = _evalscript_io(body["evalscript"])
        scenes = sorted((s for s in self.scenes if start <= s.acquired <= end), key=lambda s: s.id)
        spectral = [b for b in bands if b != "dataMask"]
        layers: dict[str, np.ndarray] = {}
        mask = np.ones((height, width), bool)
        for band in spectral:
            mosaic = np.zeros((height, width), np.float32)
            filled = np.zeros((height, width), bool)
            for scene in scenes:
                dn = _render(scene.bands[band], crs, transform, (height, width), up, down, band == "SCL")
                new = (dn != 0) & ~filled
                value = dn.astype(np.float32)
                if band != "SCL" and units == "REFLECTANCE":
                    value = (value + np.float32(scene.boa_offset)) * np.float32(1.0 / 10000.0)
                elif band != "SCL":
                    value = np.clip(value + np.float32(scene.boa_offset), 0, None)
                mosaic[new] = value[new]
                filled |= new
            layers[band] = mosaic
            mask &= filled
        out = np.stack([mask.astype(np.float32) if b == "dataMask" else layers[b] for b in bands])
        if "dataMask" in bands:
            out[:, ~mask] = 0
        return _geotiff(out.astype(_DTYPES[dtype]), crs, transform)


def _jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT-shaped token (clients read `azp` from it, as from the real service's tokens)."""

    def part(obj: dict[str, Any]) -> str:
        text = json.dumps(obj)
        text += " " * (-len(text) % 3)  # no base64 padding needed
        return base64.b64encode(text.encode()).decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({**claims, 'jti': secrets.token_hex(8)})}.emulated"


def _render(
    path: Path,
    crs: str,
    transform: Any,
    shape_hw: tuple[int, int],
    up: Resampling,
    down: Resampling,
    cat: bool,
) -> np.ndarray:
    out = np.zeros(shape_hw, np.uint16)
    with rasterio.open(path) as src:
        finer = abs(src.transform.a) < abs(transform.a)
        reproject(
            rasterio.band(src, 1), out, src_nodata=0, dst_nodata=0, dst_transform=transform, dst_crs=crs,
            resampling=Resampling.nearest if cat else (down if finer else up),
        )  # fmt: skip
    return out


def _geotiff(array: np.ndarray, crs: str, transform: Any) -> bytes:
    profile = {
        "driver": "GTiff", "count": array.shape[0], "height": array.shape[1], "width": array.shape[2],
        "dtype": array.dtype.name, "crs": crs, "transform": transform, "compress": "deflate",
    }  # fmt: skip
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(array)
        return bytes(mem.read())


def _evalscript_io(script: str) -> tuple[list[str], str, str]:
    """(input bands, units, output sampleType) from an evalscript's setup()."""
    bands = re.search(r"bands\s*:\s*\[([^\]]*)\]", script)
    if bands is None:
        raise ValueError("evalscript: no input bands")
    names = re.findall(r"[\"']([A-Za-z0-9]+)[\"']", bands.group(1))
    units = re.search(r"units\s*:\s*[\"'](\w+)[\"']", script)
    sample = re.search(r"sampleType\s*:\s*[\"']?(?:SampleType\.)?(\w+)", script)
    return names, units.group(1) if units else "DN", sample.group(1) if sample else "AUTO"


def _interval(text: str | None) -> tuple[date, date]:
    if not text:
        return date.min, date.max
    start, _, end = text.partition("/")

    def day(value: str, default: date) -> date:
        return default if value in ("", "..") else datetime.fromisoformat(value.replace("Z", "+00:00")).date()

    return day(start, date.min), day(end or start, date.max)


def _cloud_limit(text: Any) -> float:
    match = re.search(r"eo:cloud_cover\s*(<=?)\s*([\d.]+)", text if isinstance(text, str) else "")
    if not match:
        return 100.0
    limit = float(match.group(2))
    return limit if match.group(1) == "<=" else np.nextafter(limit, -np.inf)


def _item(scene: EmulatedScene) -> dict[str, Any]:
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": scene.id,
        "bbox": list(scene.footprint.bounds), "geometry": mapping(scene.footprint),
        "properties": {
            "datetime": f"{scene.acquired.isoformat()}T15:26:39Z", "eo:cloud_cover": scene.cloud_cover,
            "platform": "sentinel-2a", "constellation": "sentinel-2",
        },
        "assets": {}, "links": [],
    }  # fmt: skip


def _handler_for(emulator: SentinelHubEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(
            self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json", headers)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length) if length else b""
            endpoint = _ENDPOINTS.get(self.path.split("?")[0])
            if endpoint is None:
                self._json(404, {"error": {"status": 404, "reason": "Not Found", "message": self.path}})
                return
            emulator.requests.append((endpoint, self.path))
            fault = emulator.next_fault(endpoint)
            if fault == "slow":
                time.sleep(emulator.slow_s)
            elif fault == "429":
                self._json(
                    429, {"error": {"status": 429, "reason": "Too Many Requests"}}, {"Retry-After": "1"}
                )
                return
            elif fault in ("500", "401", "403"):
                self._json(int(fault), {"error": {"status": int(fault), "reason": "emulated fault"}})
                return
            if endpoint == "token":
                form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
                status, payload = emulator.token(form)
                self._json(status, payload)
                return
            if not emulator.authorised(self.headers.get("Authorization")):
                self._json(401, {"error": {"status": 401, "reason": "Unauthorized", "message": "bad token"}})
                return
            body = json.loads(raw or b"{}")
            if endpoint == "catalog":
                self._json(200, emulator.search(body))
                return
            tiff = emulator.process(body)
            if fault == "truncate":
                tiff = tiff[: len(tiff) // 2]
            self._send(200, tiff, "image/tiff")

    return Handler


def running_emulator(scenes_root: Path, tls_dir: Path) -> Iterator[SentinelHubEmulator]:
    """Start an emulator over the scenes under `scenes_root`; stop it afterwards (a fixture body)."""
    emulator = SentinelHubEmulator(load_scenes(scenes_root), tls_dir).start()
    try:
        yield emulator
    finally:
        emulator.stop()
