"""Module-level transforms for child-process tests (a child can only run what pickles by reference)."""

from __future__ import annotations

import os
import signal
import threading

from app.imaging import grayscale_png

STALL = b"STALL"
CRASH = b"CRASH"


def stall_or_grayscale(data: bytes) -> bytes:
    """Hang forever, deaf to SIGTERM/SIGINT like a decoder stuck in C, on ``STALL`` input; else grayscale."""
    if data.startswith(STALL):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        threading.Event().wait()
    if data.startswith(CRASH):
        os.kill(os.getpid(), signal.SIGKILL)
    return grayscale_png(data, 40_000_000)


def pid(data: bytes) -> bytes:
    """The process id that ran the call."""
    return str(os.getpid()).encode()


def allocate(data: bytes) -> bytes:
    """Allocate ``int(data)`` MiB and return their size (a stand-in for a big decode)."""
    block = bytearray(int(data) * 1024 * 1024)
    return str(len(block)).encode()
