"""A proxy on 127.0.0.1 in front of fake-gcs-server that enforces Cloud Storage's per-object write rate.

Real GCS allows about one write (create, update, delete) a second to the same
object name and answers 429 beyond it; the emulator does not. This proxy
forwards everything, except a mutation of a name written less than
``min_interval`` seconds ago, which gets the real service's 429.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_OBJECT_PATH = re.compile(r"^/storage/v1/b/[^/]+/o/([^/?]+)$")
_UPLOAD_PATH = re.compile(r"^/upload/storage/v1/b/[^/]+/o$")
_NAME_IN_METADATA = re.compile(rb'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class WriteRateProxy:
    """Forwards to ``upstream``; rejects rapid rewrites of one object name with 429 and counts them."""

    def __init__(self, upstream: str, min_interval: float = 1.0) -> None:
        self.min_interval = min_interval
        self.rejected: list[str] = []
        self.forwarded_writes: list[str] = []
        self._last_write: dict[str, float] = {}
        self._lock = threading.Lock()
        target = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                name = proxy._mutated_name(self.command, self.path, body)
                if name is not None and not proxy._admit(name):
                    payload = json.dumps({"error": {"code": 429, "message": (
                        "The object exceeded the rate limit for object mutation operations "
                        "(create, update, and delete).")}}).encode()
                    self.send_response(429)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _relay

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        """Base URL on loopback."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @staticmethod
    def _mutated_name(method: str, path: str, body: bytes) -> str | None:
        route = urlsplit(path).path
        if method in ("DELETE", "PATCH", "PUT") and (match := _OBJECT_PATH.match(route)):
            return unquote(match.group(1))
        if method == "POST" and _UPLOAD_PATH.match(route):
            match = _NAME_IN_METADATA.search(body)
            return json.loads(b'"' + match.group(1) + b'"') if match else None
        return None

    def _admit(self, name: str) -> bool:
        """Let a write of ``name`` through unless one went through less than ``min_interval`` ago."""
        with self._lock:
            now = time.monotonic()
            last = self._last_write.get(name)
            if last is not None and now - last < self.min_interval:
                self.rejected.append(name)
                return False
            self._last_write[name] = now
            self.forwarded_writes.append(name)
            return True

    def __enter__(self) -> WriteRateProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
