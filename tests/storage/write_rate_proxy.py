"""A proxy on 127.0.0.1 in front of fake-gcs-server that enforces Cloud Storage's per-object write rate.

Real GCS allows about one write (create, update, delete) a second to the same
object name and answers 429 beyond it; the emulator does not. This proxy
forwards everything, except a mutation of a name written less than
``min_interval`` seconds ago, which gets the real service's 429.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit

from tests.loopback_http import LoopbackServer, relay, send

_OBJECT_PATH = re.compile(r"^/storage/v1/b/[^/]+/o/([^/?]+)$")
_UPLOAD_PATH = re.compile(r"^/upload/storage/v1/b/[^/]+/o$")
_NAME_IN_METADATA = re.compile(rb'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_RATE_LIMITED = json.dumps({"error": {"code": 429, "message": (
    "The object exceeded the rate limit for object mutation operations (create, update, and delete).")}}).encode()


class WriteRateProxy(LoopbackServer):
    """Forwards to ``upstream``; rejects rapid rewrites of one object name with 429 and counts them."""

    def __init__(self, upstream: str, min_interval: float = 1.0) -> None:
        self.upstream = upstream
        self.min_interval = min_interval
        self.rejected: list[str] = []
        self.forwarded_writes: list[str] = []
        self._last_write: dict[str, float] = {}
        self._lock = threading.Lock()
        super().__init__(self._relay)

    def _relay(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        name = self._mutated_name(request.command, request.path, body)
        if name is not None and not self._admit(name):
            send(request, 429, {"Content-Type": "application/json"}, _RATE_LIMITED)
            return
        relay(request, body, self.upstream, timeout=30)

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
