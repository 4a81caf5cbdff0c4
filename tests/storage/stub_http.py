"""A canned-answer HTTP server on 127.0.0.1, for error paths the emulators cannot produce."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from tests.loopback_http import LoopbackServer, send


@dataclass
class Reply:
    """One canned HTTP answer."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def json(cls, status: int, payload: object, headers: dict[str, str] | None = None) -> Reply:
        """A JSON answer."""
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode())


#: Decides the answer from the method and the path (query string included).
Router = Callable[[str, str], Reply]


class StubServer(LoopbackServer):
    """Answers every request with ``router(method, path)`` and records what it saw."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.requests: list[tuple[str, str]] = []
        super().__init__(self._answer)

    def _answer(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        self.requests.append((request.command, request.path))
        reply = self.router(request.command, request.path)
        send(request, reply.status, reply.headers, reply.body)
