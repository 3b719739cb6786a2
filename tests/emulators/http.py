"""A threaded HTTP/1.1 server on 127.0.0.1 (free port) whose handlers share fault injection."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from tests.emulators.faults import Fault, Faults


class EmulatorServer(ThreadingHTTPServer):
    """The server object handlers reach through `self.server`: faults, request log, base URL."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], faults: Faults | None = None) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.faults = faults or Faults()

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def running(server: EmulatorServer) -> Iterator[EmulatorServer]:
    """Serve in a background thread for the duration of the block."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class FaultyHandler(BaseHTTPRequestHandler):
    """Keep-alive handler that first applies the pending fault (if any) to each request."""

    protocol_version = "HTTP/1.1"
    server: EmulatorServer
    error_bodies: ClassVar[dict[int, str]] = {
        401: "invalid or expired token", 403: "forbidden", 404: "not found",
        429: "too many requests", 500: "internal server error", 503: "service unavailable",
    }  # fmt: skip

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return

    def handle(self) -> None:
        """Serve the connection; a client that hangs up (GDAL aborting a transfer it has enough of,
        a timed-out read) is normal here, not an error to print."""
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):
            self.close_connection = True

    def fault(self) -> Fault | None:
        """Record this request; answer it with its fault when the fault ends it. Returns the fault
        the normal response must still apply (`truncated`), else None."""
        fault = self.server.faults.take(self.command, self.path, self.headers.get("Range"))
        if fault is None:
            return None
        if fault.kind == "slow":
            time.sleep(fault.delay_s)
            return None
        if fault.kind == "truncated":
            return fault
        status = int(fault.kind)
        headers = {"Retry-After": f"{fault.retry_after_s:g}"} if status in (429, 503) else {}
        self.send_json({"code": status, "description": self.error_bodies[status]}, status, headers)
        return fault

    def send_bytes(
        self, body: bytes, status: int = 200, content_type: str = "application/octet-stream",
        headers: dict[str, str] | None = None, truncate: bool = False,
    ) -> None:  # fmt: skip
        """A full response; `truncate`: announce the whole length, send half, drop the connection."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if truncate:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body[: len(body) // 2] if truncate else body)
            if truncate:
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            self.close_connection = True

    def send_json(
        self, doc: Any, status: int = 200, headers: dict[str, str] | None = None, truncate: bool = False,
        content_type: str = "application/json",
    ) -> None:  # fmt: skip
        """A JSON response."""
        self.send_bytes(json.dumps(doc).encode(), status, content_type, headers, truncate)

    def read_json_body(self) -> Any:
        """The request's JSON body ({} when empty)."""
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")
