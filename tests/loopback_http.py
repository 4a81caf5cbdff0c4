"""A small HTTP server on 127.0.0.1 for the tests' stubs and proxies in front of the emulators."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from typing import Self
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: Hop-by-hop or recomputed headers a proxy does not copy.
_NOT_RELAYED = {"host", "connection", "keep-alive", "transfer-encoding", "content-length"}

#: Answers one request: the handler (method, path, headers) and the request's body, already read.
Handle = Callable[[BaseHTTPRequestHandler, bytes], None]


def send(request: BaseHTTPRequestHandler, status: int, headers: dict[str, str] | list[tuple[str, str]],
         body: bytes) -> None:
    """Write an answer with its Content-Length (and no body for HEAD)."""
    request.send_response(status)
    for name, value in headers.items() if isinstance(headers, dict) else headers:
        if name.lower() not in _NOT_RELAYED:
            request.send_header(name, value)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(body)


def relay(request: BaseHTTPRequestHandler, body: bytes, upstream: str, timeout: float = 60) -> None:
    """Forward the request to ``upstream`` (a base URL) and send its answer back."""
    parts = urlsplit(upstream)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_RELAYED}
        connection.request(request.command, request.path, body=body or None, headers=headers)
        answer = connection.getresponse()
        payload = answer.read()
    finally:
        connection.close()
    send(request, answer.status, answer.getheaders(), payload)


class LoopbackServer:
    """Serves every request with ``handle`` on a free port of 127.0.0.1, in threads, while used as a context."""

    def __init__(self, handle: Handle) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                handle(self, self.rfile.read(length) if length else b"")

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _serve

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

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
