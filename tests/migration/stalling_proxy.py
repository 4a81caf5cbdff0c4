"""An HTTP proxy on 127.0.0.1 in front of an emulator that stops answering chosen requests (a stalled source)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from tests.loopback_http import LoopbackServer, relay


class StallingProxy(LoopbackServer):
    """Forwards every request to ``upstream`` except those ``stalls(method, path)`` picks: those hang
    until the proxy stops, as a source that stopped answering would (then their connections close)."""

    def __init__(self, upstream: str, stalls: Callable[[str, str], bool]) -> None:
        self.upstream = upstream
        self.stalls = stalls
        self.stalled: list[str] = []
        self._release = threading.Event()
        super().__init__(self._forward)

    def _forward(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        if self.stalls(request.command, request.path):
            self.stalled.append(request.path)
            self._release.wait()
            request.close_connection = True
            return
        relay(request, body, self.upstream)

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        super().__exit__(*exc)
