"""Spot eviction watchers: poll the cloud's metadata service and trigger the worker's drain.

* GCP: ``instance/preempted`` answers ``TRUE`` once the VM is being preempted
  (~30 s before the hard stop); the request needs ``Metadata-Flavor: Google``.
* Azure: Scheduled Events lists an event with ``EventType == "Preempt"`` at
  least 30 s ahead; the request needs ``Metadata: true``.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)

# Metadata endpoints are link-local: an HTTP(S)_PROXY from the environment
# must never see these requests.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _fetch(url: str, headers: dict[str, str], timeout: float) -> bytes:
    request = urllib.request.Request(url, headers=headers)
    with _opener.open(request, timeout=timeout) as response:
        return response.read(1024 * 1024)


def gcp_preempted(url: str, timeout: float = 2.0) -> str | None:
    """Return a reason if GCE metadata says this VM is preempted, else None."""
    body = _fetch(url, {"Metadata-Flavor": "Google"}, timeout)
    if body.decode("ascii", "replace").strip().upper() == "TRUE":
        return "GCP metadata reports instance/preempted=TRUE"
    return None


def azure_preempt_scheduled(url: str, timeout: float = 2.0) -> str | None:
    """Return a reason if Azure Scheduled Events lists a Preempt event, else None."""
    document = json.loads(_fetch(url, {"Metadata": "true"}, timeout) or b"{}")
    events = document.get("Events") if isinstance(document, dict) else None
    for event in events or []:
        if isinstance(event, dict) and event.get("EventType") == "Preempt":
            return f"Azure Scheduled Events: Preempt {event.get('EventId', '?')} (NotBefore {event.get('NotBefore', '?')})"
    return None


class EvictionWatcher(threading.Thread):
    """Background thread that polls a metadata endpoint and calls ``on_evict(reason)`` once."""

    def __init__(
        self,
        check: Callable[[str, float], str | None],
        url: str,
        interval: float,
        on_evict: Callable[[str], None],
    ) -> None:
        super().__init__(name="eviction-watcher", daemon=True)
        self._check = check
        self._url = url
        self._interval = interval
        self._on_evict = on_evict
        self._stopped = threading.Event()

    def run(self) -> None:
        """Poll until an eviction notice arrives or ``stop()`` is called."""
        failures = 0
        while not self._stopped.is_set():
            try:
                reason = self._check(self._url, min(2.0, self._interval))
                failures = 0
            except (OSError, ValueError) as exc:
                failures += 1
                # Log the first failure and then every 60th, so a VM without a
                # metadata server does not flood the log.
                if failures % 60 == 1:
                    log.warning("eviction watcher: cannot read %s: %s", self._url, exc)
                reason = None
            if reason:
                log.warning("eviction notice: %s", reason)
                self._on_evict(reason)
                return
            self._stopped.wait(self._interval)

    def stop(self) -> None:
        """Stop polling."""
        self._stopped.set()


def build_watcher(settings: Settings, on_evict: Callable[[str], None]) -> EvictionWatcher | None:
    """The watcher ``EVICTION_WATCH`` asks for (not started), or None when it is off."""
    interval = settings.EVICTION_POLL_SECONDS
    if settings.EVICTION_WATCH == "gcp":
        return EvictionWatcher(gcp_preempted, settings.GCP_METADATA_URL, interval, on_evict)
    if settings.EVICTION_WATCH == "azure":
        return EvictionWatcher(azure_preempt_scheduled, settings.AZURE_SCHEDULED_EVENTS_URL, interval, on_evict)
    return None
