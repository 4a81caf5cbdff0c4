"""One job's transform in a child process that can really be stopped: a time limit and a memory limit per job.

A decoder stuck in C code cannot be interrupted from Python, and a thread
cannot be killed. So each job's transform runs in its own child process,
forked from a ``multiprocessing`` fork server that has preloaded Pillow (a
clean, single-threaded parent: no locks of the worker's threads are copied).
The parent waits at most ``timeout`` seconds for the answer, then SIGKILLs the
child. The child caps its own address space with ``RLIMIT_AS`` before it reads
the input, so an image that needs more memory than allowed fails with
``MemoryError`` in the child (or the child dies), never the worker.
"""

from __future__ import annotations

import multiprocessing
import resource
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

#: The fork server imports these once; every job's child starts with them loaded.
_PRELOAD = ["app.imaging"]
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(_PRELOAD)

MIB = 1024 * 1024


class JobLimitExceeded(Exception):
    """The job's transform overran a per-job limit or its process died; the worker is unaffected."""


class JobTimedOut(JobLimitExceeded):
    """The transform did not answer within the time limit; its process was killed."""


class JobOutOfMemory(JobLimitExceeded):
    """The transform needed more memory than the per-job limit allows."""


class JobCrashed(JobLimitExceeded):
    """The transform's process died without answering (a signal or a hard exit)."""


def _child_main(conn: Connection, fn: Callable[[bytes], bytes], memory_bytes: int | None,
                initializer: Callable[[], None] | None) -> None:
    """Child side: cap memory, then answer each input with ``("ok", peak_rss)`` + bytes, or an error."""
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if initializer is not None:
        initializer()
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:  # the parent closed its end: done
            return
        try:
            result = fn(data)
        except MemoryError:
            del data
            # A process that hit its cap may be left fragmented: answer and exit, the next job gets a fresh one.
            conn.send(("memory", _peak_rss()))
            return
        except Exception as exc:
            exc.add_note("in the job's child process:\n" + "".join(traceback.format_exception(exc)).rstrip())
            try:
                conn.send(("error", exc))
            except Exception:  # an exception that does not pickle travels as its text
                conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
        else:
            conn.send(("ok", _peak_rss()))
            conn.send_bytes(result)


def _peak_rss() -> int:
    """This process's peak resident set size in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ChildTransform:
    """Calls ``fn(data)`` in a child process that is killed when a call overruns ``timeout`` seconds.

    The child is started on first use and reused while it behaves; a call
    that times out, crashes or runs out of memory costs the child, and the
    next call starts a fresh one. One call at a time (the worker runs one job).

    Args:
        fn: the transform, input bytes -> result bytes; must pickle (a
            module-level function or a ``functools.partial`` of one).
        timeout: seconds one call may take, from handing over the input to the answer.
        memory_bytes: the child's address-space cap (``RLIMIT_AS``); None for no cap.
        initializer: run once in each child before any call (e.g. Pillow's process-wide limits).
    """

    def __init__(
        self,
        fn: Callable[[bytes], bytes],
        *,
        timeout: float,
        memory_bytes: int | None = None,
        initializer: Callable[[], None] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.fn = fn
        self.timeout = timeout
        self.memory_bytes = memory_bytes
        self.initializer = initializer
        self._call_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._process: Any = None
        self._conn: Connection | None = None
        #: The child's peak RSS in bytes after the last answered call (for logs and measurements).
        self.last_peak_rss: int | None = None
        #: Exit code of the last child that was stopped (negative: killed by that signal).
        self.last_exitcode: int | None = None

    def __call__(self, data: bytes) -> bytes:
        """Run the transform on ``data`` in the child; raise what it raised, or a ``JobLimitExceeded``."""
        with self._call_lock:
            conn = self._ensure_child()
            deadline = time.monotonic() + self.timeout
            try:
                conn.send_bytes(data)
                if not conn.poll(max(0.0, deadline - time.monotonic())):
                    self._discard_child()
                    raise JobTimedOut(f"no answer within the {self.timeout:g}s limit (JOB_TIMEOUT_SECONDS); killed")
                kind, payload = conn.recv()
                if kind == "ok":
                    self.last_peak_rss = payload
                    return conn.recv_bytes()
            except (EOFError, OSError):
                raise self._died() from None
            if kind == "memory":
                self.last_peak_rss = payload
                self._discard_child()
                raise JobOutOfMemory(f"needs more than the {self._limit_text()} memory limit per job (JOB_MEMORY_MB)")
            raise payload

    def cancel(self) -> None:
        """Kill the child now (the worker gave its job up); a call waiting on it raises ``JobCrashed``."""
        with self._state_lock:
            process = self._process
        if process is not None and process.is_alive():
            process.kill()

    def close(self) -> None:
        """Stop the child, if any."""
        with self._call_lock:
            self._discard_child(grace=1.0)

    def _ensure_child(self) -> Connection:
        with self._state_lock:
            if self._process is not None and self._process.is_alive() and self._conn is not None:
                return self._conn
        self._discard_child()
        parent, child = _CONTEXT.Pipe(duplex=True)
        process = _CONTEXT.Process(
            target=_child_main, args=(child, self.fn, self.memory_bytes, self.initializer),
            name="spotshift-job", daemon=True,
        )
        process.start()
        child.close()
        with self._state_lock:
            self._process, self._conn = process, parent
        return parent

    def _discard_child(self, grace: float = 0.0) -> None:
        with self._state_lock:
            process, conn = self._process, self._conn
            self._process = self._conn = None
        if conn is not None:
            conn.close()  # a healthy child sees EOF and exits
        if process is None:
            return
        process.join(grace)
        if process.is_alive():
            process.kill()
        process.join()
        self.last_exitcode = process.exitcode
        process.close()

    def _died(self) -> JobLimitExceeded:
        with self._state_lock:
            process = self._process
        if process is not None:
            process.join(5)
        code = process.exitcode if process is not None else None
        self._discard_child()
        if code is not None and code < 0:
            # SIGKILL without a timeout: cancel(), the kernel's OOM killer or an operator.
            return JobCrashed(f"the job's process was killed by signal {-code} (memory limit {self._limit_text()})")
        return JobCrashed(f"the job's process exited with code {code} without an answer")

    def _limit_text(self) -> str:
        return f"{self.memory_bytes / MIB:.0f} MiB" if self.memory_bytes else "unlimited"
