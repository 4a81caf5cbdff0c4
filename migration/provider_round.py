"""One copy round for the dynamic provider: in a child process, under a deadline, reporting progress.

The provider (``migration.resource``) runs ``python -m migration.provider_round``
with the round's inputs on stdin and reads JSON-line events from its stdout:
``phase``/``progress`` while it works, then ``report`` (the copier's
``SyncReport`` and the target's digest) or ``error``. A child, not a thread,
because a source that stops answering blocks inside a socket read that no
thread can be made to leave: at the deadline the parent sends SIGINT (the
copier's Ctrl-C path: nothing new starts, a cut-off upload commits nothing),
waits a grace period, then kills it. The child also ends when its stdin
closes, so it never outlives the provider process that started it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

#: Seconds a stopped child gets to report and exit before it is killed.
STOP_GRACE_SECONDS = 15.0
#: The child sends at most one progress event per this many seconds (phase changes always go out).
CHILD_EVENT_SECONDS = 0.5


class RoundStopped(Exception):
    """The round reached its deadline and was stopped; what it finished is kept."""

    def __init__(self, message: str, view: ProgressView) -> None:
        super().__init__(message)
        self.view = view


class RoundFailed(Exception):
    """The child ended without a report (the message says why, credentials removed)."""


@dataclass
class ProgressView:
    """What the user is told about a running round: objects and bytes done of planned, rate, estimate."""

    phase: str = "listing"
    objects_total: int = 0
    bytes_total: int = 0
    objects_done: int = 0
    bytes_done: int = 0
    phase_started: float = field(default_factory=time.monotonic)
    copied_objects: int = 0
    copied_bytes: int = 0
    copy_objects_total: int = 0
    copy_bytes_total: int = 0

    def apply(self, event: Mapping[str, Any]) -> None:
        """Take one ``phase`` or ``progress`` event from the child."""
        if event.get("event") == "phase":
            if self.phase == "copy":
                self.copied_objects, self.copied_bytes = self.objects_done, self.bytes_done
            self.phase = str(event.get("name"))
            self.objects_total = int(event.get("objects") or 0)
            self.bytes_total = int(event.get("bytes") or 0)
            self.objects_done = self.bytes_done = 0
            self.phase_started = time.monotonic()
            if self.phase == "copy":
                self.copy_objects_total, self.copy_bytes_total = self.objects_total, self.bytes_total
        elif event.get("event") == "progress":
            self.objects_done = int(event.get("objects") or 0)
            self.bytes_done = int(event.get("bytes") or 0)
            if "planned_objects" in event:  # the streamed plan grows while the copy runs
                self.objects_total = max(self.objects_total, int(event["planned_objects"] or 0))
                self.bytes_total = max(self.bytes_total, int(event.get("planned_bytes") or 0))
            if self.phase == "copy":
                self.copy_objects_total, self.copy_bytes_total = self.objects_total, self.bytes_total
                self.copied_objects, self.copied_bytes = self.objects_done, self.bytes_done

    def line(self, now: float | None = None) -> str:
        """``copy: 120/400 objects, 1.2 GiB/4.0 GiB, 35.0 MiB/s, about 1m20s left``."""
        elapsed = max((now or time.monotonic()) - self.phase_started, 1e-6)
        if self.phase == "listing":
            return f"listing source and target ({human_seconds(elapsed)})"
        if not self.objects_total and not self.objects_done:  # the streamed plan has not found work yet
            return f"{self.phase}: comparing the listings, no object planned yet ({human_seconds(elapsed)})"
        rate = self.bytes_done / elapsed
        text = (f"{self.phase}: {self.objects_done:,}/{self.objects_total:,} objects, "
                f"{human_bytes(self.bytes_done)}/{human_bytes(self.bytes_total)}, {human_bytes(rate)}/s")
        if self.bytes_done and self.bytes_total > self.bytes_done:
            text += f", about {human_seconds((self.bytes_total - self.bytes_done) / max(rate, 1e-9))} left"
        elif self.objects_done and self.objects_total > self.objects_done:
            left = (self.objects_total - self.objects_done) * elapsed / self.objects_done
            text += f", about {human_seconds(left)} left"
        return text


def human_bytes(value: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_seconds(seconds: float) -> str:
    """``4000`` -> ``1h06m``; ``75`` -> ``1m15s``."""
    seconds = int(max(seconds, 0))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


#: Fields of a connection string or SAS whose values are credentials.
_CREDENTIAL_FIELDS = ("accountkey", "sharedaccesssignature", "sig")


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every secret value, and the key or signature inside it, replaced."""
    parts: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        parts.add(secret)
        for piece in secret.replace("&", ";").replace("?", ";").split(";"):
            name, _, value = piece.partition("=")
            if name.strip().lower() in _CREDENTIAL_FIELDS and len(value) >= 4:
                parts.add(value)
    for part in sorted(parts, key=len, reverse=True):
        text = text.replace(part, "[secret]")
    return text


# -- parent side -----------------------------------------------------------------------


def run(props: Mapping[str, Any], *, deadline_seconds: float, interval_seconds: float,
        on_status: Callable[[ProgressView], None], on_note: Callable[[ProgressView], None],
        secrets: list[str]) -> dict[str, Any]:
    """Run one round in a child process; return ``{"sync": ..., "digest": ...}``.

    ``on_status`` gets the view every ``interval_seconds``; ``on_note`` every
    twelve intervals and at each phase change. Raises RoundStopped at the
    deadline and RoundFailed when the child ends without a report.
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "migration.provider_round"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()
    stderr_tail: list[str] = []
    threading.Thread(target=_read_events, args=(child.stdout, events), daemon=True).start()
    threading.Thread(target=_read_tail, args=(child.stderr, stderr_tail), daemon=True).start()
    assert child.stdin is not None
    child.stdin.write(json.dumps(dict(props)) + "\n")
    child.stdin.flush()  # stdin stays open: the child exits when it closes

    view = ProgressView()
    outcome: dict[str, Any] | None = None
    started = time.monotonic()
    deadline = started + deadline_seconds
    next_status = started + interval_seconds
    next_note = started + 12 * interval_seconds
    on_status(view)
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                _stop(child, events, view)
                raise RoundStopped(f"stopped at its deadline after {human_seconds(deadline_seconds)}", view)
            try:
                event = events.get(timeout=max(0.0, min(next_status, deadline) - now))
            except queue.Empty:
                event = {}
            if event is None:
                break
            kind = event.get("event")
            if kind in ("phase", "progress"):
                view.apply(event)
                if kind == "phase":
                    on_note(view)
            elif kind in ("report", "error"):
                outcome = event
            now = time.monotonic()
            if now >= next_status:
                on_status(view)
                next_status = now + interval_seconds
            if now >= next_note:
                on_note(view)
                next_note = now + 12 * interval_seconds
    finally:
        _close(child)
    if outcome is None or outcome.get("event") == "error":
        reason = outcome.get("message") if outcome else "".join(stderr_tail[-5:]).strip() or (
            f"the copy process exited with status {child.returncode}")
        raise RoundFailed(redact(str(reason), secrets))
    return {"sync": outcome["sync"], "digest": outcome["digest"]}


def _read_events(stream: TextIO, events: queue.Queue) -> None:
    for line in stream:
        try:
            events.put(json.loads(line))
        except ValueError:
            continue
    events.put(None)


def _read_tail(stream: TextIO, tail: list[str]) -> None:
    for line in stream:
        tail.append(line)
        del tail[:-20]


def _stop(child: subprocess.Popen, events: queue.Queue, view: ProgressView) -> None:
    """SIGINT, then take the child's last events until it exits (or kill it after the grace period)."""
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
    end = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < end:
        try:
            event = events.get(timeout=max(0.0, end - time.monotonic()))
        except queue.Empty:
            break
        if event is None:
            break
        if event.get("event") in ("phase", "progress"):
            view.apply(event)
    if child.poll() is None:
        child.kill()


def _close(child: subprocess.Popen) -> None:
    try:
        if child.stdin is not None:
            child.stdin.close()
    except OSError:
        pass
    try:
        child.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


# -- child side ------------------------------------------------------------------------


class _Emitter:
    """JSON lines on a private copy of stdout (whatever the libraries print goes to stderr)."""

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
        sys.stdout = sys.stderr
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._out.write(json.dumps(event, default=str) + "\n")
            self._out.flush()


def _progress(emit: _Emitter):
    from migration import copier

    class Events(copier.Progress):
        """Copier progress as events: phases at once, counters at most every CHILD_EVENT_SECONDS."""

        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.objects = self.nbytes = 0
            self.planned_objects = self.planned_bytes = 0
            self.sent = 0.0

        def phase(self, name: str, objects: int, nbytes: int) -> None:
            with self.lock:
                self.objects = self.nbytes = 0
                self.planned_objects, self.planned_bytes = objects, nbytes
            emit({"event": "phase", "name": name, "objects": objects, "bytes": nbytes})

        def advance(self, objects: int = 0, nbytes: int = 0) -> None:
            with self.lock:
                self.objects += objects
                self.nbytes += nbytes
                self._send(force=bool(objects))

        def planned(self, objects: int, nbytes: int) -> None:
            with self.lock:
                self.planned_objects += objects
                self.planned_bytes += nbytes
                self._send(force=False)

        def _send(self, force: bool) -> None:
            now = time.monotonic()
            if now - self.sent < CHILD_EVENT_SECONDS and not force:
                return
            self.sent = now
            emit({"event": "progress", "objects": self.objects, "bytes": self.nbytes,
                  "planned_objects": self.planned_objects, "planned_bytes": self.planned_bytes})

    return Events()


def _exit_when_parent_goes() -> None:
    sys.stdin.read()
    os._exit(4)


def main() -> None:
    """Child entry point: one round from the inputs on stdin, events on stdout."""
    props = json.loads(sys.stdin.readline())
    emit = _Emitter()
    threading.Thread(target=_exit_when_parent_goes, daemon=True).start()
    try:
        from migration import copier
        from migration.resource import _digest, _selection, _source_store, _target_store

        selection = _selection(props)
        source = _source_store(props)
        target = _target_store(props)
        # No close on Ctrl-C: a stalled connection could hold it, and the process ends right after.
        report = copier.sync(source, target, strict=bool(props.get("strict")),
                             workers=int(props.get("workers") or copier.DEFAULT_WORKERS),
                             progress=_progress(emit), **selection)
        digest = _digest(target, selection)
        source.close()
        target.close()
    except KeyboardInterrupt:
        emit({"event": "stopped"})
        os._exit(3)
    except Exception as err:
        emit({"event": "error", "message": f"{err}" or type(err).__name__})
        os._exit(1)
    emit({"event": "report", "sync": report.to_dict(), "digest": digest})
    os._exit(0)


if __name__ == "__main__":
    main()
