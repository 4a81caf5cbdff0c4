"""Eviction watchers against a fake metadata server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.eviction import azure_eviction_scheduled, build_watcher, gcp_preempted
from app.settings import Settings
from app.storage import LocalStore
from app.worker import Worker, run_worker

from .test_worker import wait_until


class FakeMetadata:
    """Answers every GET with ``body`` if the request carries ``header``, else 403; records requests."""

    def __init__(self, header: tuple[str, str], body: bytes, status: int = 200, delay: float = 0.0) -> None:
        self.header = header
        self.body = body
        self.status = status
        self.requests: list[dict[str, str]] = []
        self.posts: list[tuple[dict[str, str], bytes]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append(dict(self.headers))
                time.sleep(delay)
                if self.headers.get(fake.header[0]) != fake.header[1]:
                    self._answer(403, b"missing metadata header")
                else:
                    self._answer(fake.status, fake.body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.posts.append((dict(self.headers), body))
                self._answer(200 if self.headers.get(fake.header[0]) == fake.header[1] else 403, b"")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metadata"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def metadata_server() -> Iterator[Callable[..., FakeMetadata]]:
    """Start fake metadata servers; all are shut down after the test."""
    servers: list[FakeMetadata] = []

    def start(header: tuple[str, str], body: bytes, status: int = 200, delay: float = 0.0) -> FakeMetadata:
        server = FakeMetadata(header, body, status, delay)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


GCP_HEADER = ("Metadata-Flavor", "Google")
AZURE_HEADER = ("Metadata", "true")


INSTANCE = "spotshift-workers_3"


def azure_events(*event_types: str, resources: tuple[str, ...] = (INSTANCE,)) -> bytes:
    events = [
        {"EventId": f"evt-{n}", "EventType": kind, "ResourceType": "VirtualMachine", "Resources": list(resources),
         "NotBefore": "Mon, 1 Jan 2024"}
        for n, kind in enumerate(event_types)
    ]
    return json.dumps({"DocumentIncarnation": len(events), "Events": events}).encode()


def test_gcp_check_sends_the_metadata_flavor_header(metadata_server: Callable[..., FakeMetadata]) -> None:
    server = metadata_server(GCP_HEADER, b"TRUE")

    notice = gcp_preempted(server.url)

    assert notice is not None and "preempted" in notice.reason and notice.event_id is None
    assert server.requests[0]["Metadata-Flavor"] == "Google"


def test_gcp_check_is_quiet_while_not_preempted(metadata_server: Callable[..., FakeMetadata]) -> None:
    server = metadata_server(GCP_HEADER, b"FALSE")

    assert gcp_preempted(server.url) is None


@pytest.mark.parametrize("kind", ["Preempt", "Terminate"])
def test_azure_check_finds_preempt_or_terminate_among_other_events(
    metadata_server: Callable[..., FakeMetadata], kind: str
) -> None:
    server = metadata_server(AZURE_HEADER, azure_events("Freeze", kind))

    notice = azure_eviction_scheduled(server.url, instance_name=INSTANCE)

    assert notice is not None and f"{kind} evt-1" in notice.reason and notice.event_id == "evt-1"
    assert server.requests[0]["Metadata"] == "true"


def test_azure_check_ignores_the_eviction_of_another_scale_set_instance(
    metadata_server: Callable[..., FakeMetadata],
) -> None:
    server = metadata_server(AZURE_HEADER, azure_events("Preempt", "Terminate", resources=("spotshift-workers_7",)))

    assert azure_eviction_scheduled(server.url, instance_name=INSTANCE) is None


def test_without_its_own_name_the_check_drains_but_approves_nothing(
    metadata_server: Callable[..., FakeMetadata],
) -> None:
    server = metadata_server(AZURE_HEADER, azure_events("Terminate", resources=("spotshift-workers_7",)))

    notice = azure_eviction_scheduled(server.url, instance_name=None)

    assert notice is not None and notice.event_id is None


@pytest.mark.parametrize("body", [b'{"Events": 5}', b'{"Events": [5, null]}', b"[]"])
def test_odd_scheduled_events_documents_are_no_notice(metadata_server: Callable[..., FakeMetadata], body: bytes) -> None:
    server = metadata_server(AZURE_HEADER, body)

    assert azure_eviction_scheduled(server.url, instance_name=INSTANCE) is None


@pytest.mark.parametrize("body", [azure_events(), azure_events("Freeze", "Reboot", "Redeploy"), b"{}"])
def test_azure_check_ignores_events_that_keep_the_vm(
    metadata_server: Callable[..., FakeMetadata], body: bytes
) -> None:
    server = metadata_server(AZURE_HEADER, body)

    assert azure_eviction_scheduled(server.url) is None


@pytest.mark.parametrize(
    ("kind", "header", "calm", "evicted"),
    [
        ("gcp", GCP_HEADER, b"FALSE", b"TRUE"),
        ("azure", AZURE_HEADER, azure_events("Freeze"), azure_events("Preempt")),
    ],
)
def test_eviction_notice_triggers_the_worker_drain(
    local_store: LocalStore,
    make_settings: Callable[..., Settings],
    metadata_server: Callable[..., FakeMetadata],
    kind: str,
    header: tuple[str, str],
    calm: bytes,
    evicted: bytes,
) -> None:
    server = metadata_server(header, calm)
    settings = make_settings(
        EVICTION_WATCH=kind,
        GCP_METADATA_URL=server.url,
        AZURE_SCHEDULED_EVENTS_URL=server.url,
        AZURE_INSTANCE_NAME_URL=metadata_server(header, INSTANCE.encode()).url,
        EVICTION_POLL_SECONDS=0.02,
    )
    worker = Worker(local_store, settings)
    watcher = build_watcher(settings, worker.stop)
    assert watcher is not None
    run = threading.Thread(target=worker.run, daemon=True)
    run.start()
    watcher.start()
    wait_until(lambda: len(server.requests) >= 2, "the watcher to poll")
    assert not worker.stopping

    server.body = evicted
    run.join(10)
    watcher.join(10)

    assert not run.is_alive() and not watcher.is_alive()
    assert worker.stop_reason is not None and ("preempted" in worker.stop_reason or "Preempt" in worker.stop_reason)


def test_metadata_errors_do_not_trigger_a_drain(
    make_settings: Callable[..., Settings], metadata_server: Callable[..., FakeMetadata]
) -> None:
    server = metadata_server(GCP_HEADER, b"TRUE", status=500)
    settings = make_settings(EVICTION_WATCH="gcp", GCP_METADATA_URL=server.url, EVICTION_POLL_SECONDS=0.01)
    reasons: list[str] = []
    watcher = build_watcher(settings, reasons.append)
    assert watcher is not None

    watcher.start()
    wait_until(lambda: len(server.requests) >= 3, "several polls")
    watcher.stop()
    watcher.join(10)

    assert reasons == []


def test_no_watcher_when_eviction_watch_is_off(settings: Settings) -> None:
    assert build_watcher(settings, lambda reason: None) is None


def test_a_name_slower_than_the_poll_is_still_read_and_the_event_approved(
    make_settings: Callable[..., Settings], metadata_server: Callable[..., FakeMetadata]
) -> None:
    # Polls every 20 ms; IMDS takes 200 ms to give the name (a busy host). The name read must
    # not time out with the poll, or the event is drained for and never approved.
    server = metadata_server(AZURE_HEADER, azure_events("Preempt"))
    name = metadata_server(AZURE_HEADER, INSTANCE.encode(), delay=0.2)
    settings = make_settings(EVICTION_WATCH="azure", AZURE_SCHEDULED_EVENTS_URL=server.url,
                             AZURE_INSTANCE_NAME_URL=name.url, EVICTION_POLL_SECONDS=0.02)

    code = run_worker(settings)

    assert code == 0
    assert [json.loads(body) for _, body in server.posts] == [{"StartRequests": [{"EventId": "evt-0"}]}]


def test_a_drained_worker_approves_the_terminate_event_so_azure_need_not_wait(
    make_settings: Callable[..., Settings], metadata_server: Callable[..., FakeMetadata]
) -> None:
    server = metadata_server(AZURE_HEADER, azure_events("Terminate"))
    name = metadata_server(AZURE_HEADER, INSTANCE.encode())
    settings = make_settings(EVICTION_WATCH="azure", AZURE_SCHEDULED_EVENTS_URL=server.url,
                             AZURE_INSTANCE_NAME_URL=name.url, EVICTION_POLL_SECONDS=0.02)

    code = run_worker(settings)  # not burst: only the notice can end it

    assert code == 0, "the worker drains on the Terminate notice and exits 0"
    assert len(server.posts) == 1
    headers, body = server.posts[0]
    assert headers["Metadata"] == "true"
    assert json.loads(body) == {"StartRequests": [{"EventId": "evt-0"}]}


def test_no_approval_without_an_eviction_notice(
    local_store: LocalStore, make_settings: Callable[..., Settings], metadata_server: Callable[..., FakeMetadata]
) -> None:
    server = metadata_server(AZURE_HEADER, azure_events("Freeze"))
    settings = make_settings(EVICTION_WATCH="azure", AZURE_SCHEDULED_EVENTS_URL=server.url, EVICTION_POLL_SECONDS=0.02)

    code = run_worker(settings, burst=True)

    assert code == 0
    assert server.posts == []


def test_an_unexpected_error_in_a_poll_does_not_end_the_watch() -> None:
    from app.eviction import EvictionWatcher, Notice

    answers = iter([TypeError("odd document"), RuntimeError("bad status line"), Notice("evicted")])
    reasons: list[str] = []

    def check(url: str, timeout: float) -> Notice | None:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    watcher = EvictionWatcher(check, "http://127.0.0.1:9/unused", 0.01, reasons.append)
    watcher.start()
    watcher.join(5)

    assert reasons == ["evicted"] and not watcher.is_alive()
