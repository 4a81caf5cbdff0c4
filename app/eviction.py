"""Spot eviction watchers: poll the cloud's metadata service and trigger the worker's drain.

* GCP: ``instance/preempted`` answers ``TRUE`` once the VM is being preempted
  (~30 s before the hard stop); the request needs ``Metadata-Flavor: Google``.
* Azure: Scheduled Events lists an event with ``EventType`` ``Preempt`` (a
  Spot eviction, at least 30 s ahead) or ``Terminate`` (the scale set is
  deleting this instance: scale-in or replacement, announced by its terminate
  notification); the request needs ``Metadata: true``. Every instance of a
  scale set sees the events of all its instances, so an event counts only if
  its ``Resources`` name this VM (from IMDS ``instance/compute/name``). Once
  the worker has drained, its own event is approved so Azure need not wait
  until ``NotBefore``.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)

#: Scheduled Events that take this VM away: drain on either.
AZURE_EVICTION_EVENTS = ("Preempt", "Terminate")
#: Seconds one metadata request may take.
METADATA_TIMEOUT = 2.0

# Metadata endpoints are link-local: an HTTP(S)_PROXY from the environment
# must never see these requests.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Notice:
    """An eviction notice: why, and the Azure Scheduled Event to approve once drained."""

    reason: str
    event_id: str | None = None


def _fetch(url: str, headers: dict[str, str], timeout: float, data: bytes | None = None) -> bytes:
    request = urllib.request.Request(url, headers=headers, data=data, method="POST" if data is not None else "GET")
    with _opener.open(request, timeout=timeout) as response:
        return response.read(1024 * 1024)


def gcp_preempted(url: str, timeout: float = METADATA_TIMEOUT) -> Notice | None:
    """A notice if GCE metadata says this VM is preempted, else None."""
    body = _fetch(url, {"Metadata-Flavor": "Google"}, timeout)
    if body.decode("ascii", "replace").strip().upper() == "TRUE":
        return Notice("GCP metadata reports instance/preempted=TRUE")
    return None


def azure_eviction_scheduled(url: str, timeout: float = METADATA_TIMEOUT, instance_name: str | None = None) -> Notice | None:
    """A notice if Azure Scheduled Events lists a Preempt or Terminate event for this VM, else None.

    With ``instance_name`` unknown, any such event counts (draining for a
    neighbour's eviction is safer than missing our own), but none is approved.
    """
    document = json.loads(_fetch(url, {"Metadata": "true"}, timeout) or b"{}")
    events = document.get("Events") if isinstance(document, dict) else None
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict) or event.get("EventType") not in AZURE_EVICTION_EVENTS:
            continue
        resources = event.get("Resources")
        resources = [str(r) for r in resources] if isinstance(resources, list) else []
        if instance_name and resources and instance_name not in resources:
            continue  # another instance of the scale set
        event_id = event.get("EventId")
        ours = bool(instance_name) and instance_name in resources
        return Notice(
            f"Azure Scheduled Events: {event['EventType']} {event_id or '?'} "
            f"(NotBefore {event.get('NotBefore', '?')})",
            str(event_id) if event_id and ours else None,
        )
    return None


class AzureEvictionCheck:
    """``azure_eviction_scheduled`` for this VM, whose name is read once from IMDS."""

    def __init__(self, name_url: str) -> None:
        self._name_url = name_url
        self.instance_name: str | None = None

    def __call__(self, url: str, timeout: float = METADATA_TIMEOUT) -> Notice | None:
        """Poll Scheduled Events (learning this VM's name first, when it can)."""
        if self.instance_name is None:
            try:
                self.instance_name = _fetch(self._name_url, {"Metadata": "true"}, timeout).decode().strip() or None
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                log.debug("eviction watcher: instance name unknown yet: %s", exc)
        return azure_eviction_scheduled(url, timeout, self.instance_name)


def approve_azure_event(url: str, event_id: str, timeout: float = METADATA_TIMEOUT) -> None:
    """Approve (start) a Scheduled Event: this VM is done and may go now."""
    body = json.dumps({"StartRequests": [{"EventId": event_id}]}).encode()
    _fetch(url, {"Metadata": "true", "Content-Type": "application/json"}, timeout, data=body)


class EvictionWatcher(threading.Thread):
    """Background thread that polls a metadata endpoint and calls ``on_evict(reason)`` once."""

    def __init__(
        self,
        check: Callable[[str, float], Notice | None],
        url: str,
        interval: float,
        on_evict: Callable[[str], None],
        approve: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__(name="eviction-watcher", daemon=True)
        self._check = check
        self._url = url
        self._interval = interval
        self._on_evict = on_evict
        self._approve = approve
        self._stopped = threading.Event()
        self.notice: Notice | None = None

    def run(self) -> None:
        """Poll until an eviction notice arrives or ``stop()`` is called."""
        failures = 0
        while not self._stopped.is_set():
            try:
                # The whole metadata timeout, however fast the polls: a read of the VM's name
                # cut short by a 20 ms poll left an event drained for but never approved.
                notice = self._check(self._url, METADATA_TIMEOUT)
                failures = 0
            except Exception as exc:  # a bad answer must never end the watch
                failures += 1
                # Log the first failure and then every 60th, so a VM without a
                # metadata server does not flood the log.
                if failures % 60 == 1:
                    log.warning("eviction watcher: cannot read %s: %s", self._url, exc)
                notice = None
            if notice is not None:
                log.warning("eviction notice: %s", notice.reason)
                self.notice = notice
                self._on_evict(notice.reason)
                return
            self._stopped.wait(self._interval)

    def stop(self) -> None:
        """Stop polling."""
        self._stopped.set()

    def approve(self) -> None:
        """After the drain: approve the notice's event, if it has one (best effort)."""
        notice = self.notice
        if notice is None or notice.event_id is None or self._approve is None:
            return
        try:
            self._approve(self._url, notice.event_id)
            log.info("approved scheduled event %s: drained", notice.event_id)
        except (OSError, ValueError) as exc:
            log.warning("could not approve scheduled event %s (the platform waits for NotBefore): %s",
                        notice.event_id, exc)


def build_watcher(settings: Settings, on_evict: Callable[[str], None]) -> EvictionWatcher | None:
    """The watcher ``EVICTION_WATCH`` asks for (not started), or None when it is off."""
    interval = settings.EVICTION_POLL_SECONDS
    if settings.EVICTION_WATCH == "gcp":
        return EvictionWatcher(gcp_preempted, settings.GCP_METADATA_URL, interval, on_evict)
    if settings.EVICTION_WATCH == "azure":
        return EvictionWatcher(AzureEvictionCheck(settings.AZURE_INSTANCE_NAME_URL), settings.AZURE_SCHEDULED_EVENTS_URL,
                               interval, on_evict, approve=approve_azure_event)
    return None
