"""Messages from the dynamic provider to the user, through the Pulumi engine's ``Log`` service.

The engine starts a provider plugin with the engine's gRPC address as its only
argument (``pulumi-resource-pulumi-python <address>``, which runs
``python -m pulumi.dynamic <address>``); the Python dynamic-provider host of
SDK 3.272 ignores it and offers providers no logging of its own, so this
module dials it. Ephemeral messages become the resource's status line in
``pulumi up``'s display; the others are kept as the resource's diagnostics.
Logging never fails a round: an engine that cannot be reached is reported once
on stderr (which the engine also shows) and ignored.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence

#: How long one Log call may take before the message is dropped.
LOG_TIMEOUT_SECONDS = 5.0


def engine_address(argv: Sequence[str] | None = None) -> str | None:
    """The engine's address when this process is the dynamic-provider host, else None."""
    args = list(sys.argv if argv is None else argv)
    if len(args) < 2 or not args[0].replace("\\", "/").endswith("pulumi/dynamic/__main__.py"):
        return None
    address = args[1].strip()
    return address if ":" in address else None


class EngineLog:
    """Sends INFO messages about one resource to the engine (or nowhere when there is no engine)."""

    def __init__(self, address: str | None, urn: str = "") -> None:
        self.urn = urn or ""
        self._lock = threading.Lock()
        self._channel = None
        self._stub = None
        self._broken = False
        if address:
            import grpc
            from pulumi.runtime.proto import engine_pb2_grpc

            self._channel = grpc.insecure_channel(address)
            self._stub = engine_pb2_grpc.EngineStub(self._channel)

    @classmethod
    def for_process(cls, urn: str = "") -> EngineLog:
        """A log to the engine that started this provider process."""
        return cls(engine_address(), urn)

    def status(self, message: str) -> None:
        """A status line (ephemeral): replaces the previous one in the display."""
        self._send(message, ephemeral=True)

    def info(self, message: str) -> None:
        """A message kept in the resource's diagnostics."""
        self._send(message, ephemeral=False)

    def _send(self, message: str, *, ephemeral: bool) -> None:
        if self._stub is None or self._broken:
            return
        from pulumi.runtime.proto import engine_pb2

        request = engine_pb2.LogRequest(severity=engine_pb2.INFO, message=message, urn=self.urn,
                                        ephemeral=ephemeral)
        with self._lock:
            try:
                self._stub.Log(request, timeout=LOG_TIMEOUT_SECONDS)
            except Exception as err:  # the copy matters more than its progress line
                self._broken = True
                print(f"spotshift: cannot send progress to the Pulumi engine ({type(err).__name__}); "
                      "the round goes on without it", file=sys.stderr)

    def close(self) -> None:
        """Close the channel to the engine."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = None
