"""An HTTP proxy on 127.0.0.1 in front of an emulator that stops answering chosen requests (a stalled source)."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: Hop-by-hop or recomputed headers the proxy does not copy.
_SKIPPED = {"host", "connection", "transfer-encoding", "content-length", "keep-alive"}


class StallingProxy:
    """Forwards every request to ``upstream`` except those ``stalls(method, path)`` picks: those hang
    until ``release()`` (or the proxy's stop), as a source that stopped answering would."""

    def __init__(self, upstream: str, stalls: Callable[[str, str], bool]) -> None:
        parts = urlsplit(upstream)
        self.stalled: list[str] = []
        self._release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if stalls(self.command, self.path):
                    proxy.stalled.append(self.path)
                    proxy._release.wait()
                    self.close_connection = True
                    return
                connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _SKIPPED}
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    answer = connection.getresponse()
                    payload = answer.read()
                finally:
                    connection.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in _SKIPPED:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _forward

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StallingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
