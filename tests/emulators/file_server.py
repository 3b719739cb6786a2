"""A static file server with HTTP Range requests (RFC 9110 single ranges), like an S3 bucket of COGs."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tests.emulators.faults import Faults
from tests.emulators.http import EmulatorServer, FaultyHandler

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class FileServer(EmulatorServer):
    """Serves the files under `root` at http://127.0.0.1:PORT/<relative path>."""

    def __init__(self, root: Path, faults: Faults | None = None) -> None:
        self.root = Path(root).resolve()
        super().__init__(_FileHandler, faults)

    def href(self, path: Path) -> str:
        """The URL of a file under the root."""
        return f"{self.url}/{Path(path).resolve().relative_to(self.root).as_posix()}"


class _FileHandler(FaultyHandler):
    server: FileServer

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        fault = self.fault()
        if fault is not None and fault.kind != "truncated":
            return
        path = (self.server.root / unquote(urlsplit(self.path).path).lstrip("/")).resolve()
        if not path.is_relative_to(self.server.root) or not path.is_file():
            self.send_json({"code": 404, "description": "no such key"}, 404)
            return
        data = path.read_bytes()
        size = len(data)
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{path.stat().st_mtime_ns:x}-{size:x}"'}
        wanted = self.headers.get("Range")
        if not wanted:
            self.send_bytes(data, 200, "image/tiff", headers, truncate=fault is not None)
            return
        match = _RANGE.match(wanted.strip())
        if match is None or match.group(1) == match.group(2) == "":
            self.send_bytes(b"", 416, "text/plain", headers | {"Content-Range": f"bytes */{size}"})
            return
        if match.group(1) == "":  # suffix: the last N bytes
            start, end = max(0, size - int(match.group(2))), size - 1
        else:
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        if start >= size or end < start:
            self.send_bytes(b"", 416, "text/plain", headers | {"Content-Range": f"bytes */{size}"})
            return
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self.send_bytes(data[start : end + 1], 206, "image/tiff", headers, truncate=fault is not None)
