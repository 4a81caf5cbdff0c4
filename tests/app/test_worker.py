"""The worker in-process: burst mode, failures per kind, lease loss and the drain."""

from __future__ import annotations

import io
import shutil
import threading
from collections.abc import Callable

import pytest
from PIL import Image

from app.queue import Queue
from app.settings import Settings
from app.storage import LocalStore, PreconditionFailed, TransientStorageError
from app.worker import StorageLost, Worker

from .conftest import DownStore
from .images import jpeg_bytes, png_bytes, truncated_png


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Block until ``condition()`` holds (a synchronisation aid, not an assertion on timing)."""
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        event.wait(0.01)
    raise AssertionError(f"gave up waiting for {what}")


class Gate:
    """A transform that blocks until the test opens the gate."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, data: bytes) -> bytes:
        self.entered.set()
        self.opened.wait(10)
        return b"\x89PNG gated result"


def start(worker: Worker, until_empty: bool = False) -> threading.Thread:
    thread = threading.Thread(target=worker.run, kwargs={"until_empty": until_empty}, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("data", "filename", "content_type"),
    [(png_bytes((64, 48)), "in.png", "image/png"), (jpeg_bytes((80, 60)), "in.jpg", "image/jpeg")],
    ids=["png", "jpeg"],
)
def test_burst_mode_turns_queued_images_into_grayscale_pngs(
    local_store: LocalStore, settings: Settings, data: bytes, filename: str, content_type: str
) -> None:
    queue = Queue.from_settings(local_store, settings)
    job = queue.submit(data, filename, content_type)

    Worker(local_store, settings).run(until_empty=True)

    done = queue.get(job["id"])
    assert done["status"] == "done"
    assert done["result_key"] == f"results/{job['id']}.png"
    result = Image.open(io.BytesIO(local_store.get(done["result_key"])))
    assert (result.format, result.mode, result.size) == ("PNG", "L", Image.open(io.BytesIO(data)).size)
    assert local_store.head(done["result_key"]).content_type == "image/png"


def test_burst_mode_returns_at_once_on_an_empty_queue(local_store: LocalStore, settings: Settings) -> None:
    worker = Worker(local_store, settings)

    worker.run(until_empty=True)

    assert (worker.done, worker.failed, worker.stop_reason) == (0, 0, None)


@pytest.mark.parametrize("data", [b"not an image at all", truncated_png()], ids=["text", "truncated-png"])
def test_non_image_input_fails_immediately_without_retry(
    local_store: LocalStore, settings: Settings, data: bytes
) -> None:
    queue = Queue.from_settings(local_store, settings)
    job = queue.submit(data, "in.png", "image/png")

    Worker(local_store, settings).run(until_empty=True)

    failed = queue.get(job["id"])
    assert (failed["status"], failed["attempts"]) == ("failed", 1)
    assert failed["error"].startswith("invalid image:")
    assert local_store.exists(f"failed/{job['id']}.json")


def test_a_bad_job_does_not_stop_the_loop(local_store: LocalStore, settings: Settings) -> None:
    queue = Queue.from_settings(local_store, settings)
    bad = queue.submit(b"garbage", "bad.png", "image/png")
    good = queue.submit(png_bytes(), "good.png", "image/png")
    worker = Worker(local_store, settings)

    worker.run(until_empty=True)

    assert queue.get(bad["id"])["status"] == "failed"
    assert queue.get(good["id"])["status"] == "done"
    assert (worker.done, worker.failed) == (1, 1)


def test_job_failing_every_attempt_ends_failed_with_reason_after_max_attempts(
    local_store: LocalStore, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(MAX_ATTEMPTS=3)
    queue = Queue.from_settings(local_store, settings)
    job = queue.submit(png_bytes(), "in.png", "image/png")
    calls = []

    def flaky(data: bytes) -> bytes:
        calls.append(len(data))
        raise RuntimeError("GPU fell off the bus")

    Worker(local_store, settings, process=flaky).run(until_empty=True)

    failed = queue.get(job["id"])
    assert len(calls) == 3
    assert (failed["status"], failed["attempts"]) == ("failed", 3)
    assert "RuntimeError: GPU fell off the bus" in failed["error"]
    assert "gave up after 3 attempts" in failed["error"]


def test_input_deleted_behind_the_queue_fails_the_job(local_store: LocalStore, settings: Settings) -> None:
    queue = Queue.from_settings(local_store, settings)
    job = queue.submit(png_bytes(), "in.png", "image/png")
    local_store.delete(job["input_key"])

    Worker(local_store, settings).run(until_empty=True)

    assert queue.get(job["id"])["error"].startswith("input missing:")


def test_worker_stops_when_the_store_disappears(local_store: LocalStore, settings: Settings) -> None:
    worker = Worker(local_store, settings)
    shutil.rmtree(local_store.root)

    with pytest.raises(StorageLost, match="storage unusable"):
        worker.run()


def test_worker_stops_after_repeated_transient_storage_errors(settings: Settings) -> None:
    store = DownStore()
    worker = Worker(store, settings.model_copy(update={"WORKER_POLL_SECONDS": 0.001}))

    with pytest.raises(StorageLost, match="5 times in a row") as raised:
        worker.run()

    assert isinstance(raised.value.__cause__, TransientStorageError)


def test_drain_releases_the_job_when_the_grace_period_runs_out(
    local_store: LocalStore, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(WORKER_GRACE_SECONDS=0)
    queue = Queue.from_settings(local_store, settings)
    job = queue.submit(png_bytes(), "in.png", "image/png")
    gate = Gate()
    worker = Worker(local_store, settings, process=gate)
    thread = start(worker)
    assert gate.entered.wait(10)

    worker.stop("test drain")
    thread.join(10)
    gate.opened.set()

    assert not thread.is_alive()
    released = queue.get(job["id"])
    assert (released["status"], released["attempts"]) == ("queued", 0)
    assert not local_store.exists(f"leases/{job['id']}")
    assert local_store.exists(f"queue/{job['id']}")


def test_drain_lets_the_current_job_finish_within_the_grace_period(
    local_store: LocalStore, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(WORKER_GRACE_SECONDS=30)
    queue = Queue.from_settings(local_store, settings)
    first = queue.submit(png_bytes(), "first.png", "image/png")
    second = queue.submit(png_bytes(), "second.png", "image/png")
    gate = Gate()
    worker = Worker(local_store, settings, process=gate)
    thread = start(worker)
    assert gate.entered.wait(10)

    worker.stop("test drain")
    gate.opened.set()
    thread.join(10)

    assert not thread.is_alive()
    statuses = {queue.get(first["id"])["status"], queue.get(second["id"])["status"]}
    assert statuses == {"done", "queued"}, "finishes the job in hand, claims no other"


def test_a_second_stop_request_releases_at_once(
    local_store: LocalStore, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(WORKER_GRACE_SECONDS=300)
    queue = Queue.from_settings(local_store, settings)
    job = queue.submit(png_bytes(), "in.png", "image/png")
    gate = Gate()
    worker = Worker(local_store, settings, process=gate)
    thread = start(worker)
    assert gate.entered.wait(10)

    worker.stop("first")
    worker.stop("second")
    thread.join(10)
    gate.opened.set()

    assert not thread.is_alive()
    assert queue.get(job["id"])["status"] == "queued"


def test_worker_abandons_a_job_whose_lease_was_taken_over(
    local_store: LocalStore, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(LEASE_SECONDS=0.3, WORKER_GRACE_SECONDS=0)
    queue = Queue.from_settings(local_store, settings)
    job = queue.submit(png_bytes(), "in.png", "image/png")
    gate = Gate()
    worker = Worker(local_store, settings, process=gate)
    thread = start(worker)
    assert gate.entered.wait(10)

    local_store.put_json(f"leases/{job['id']}", {"job_id": job["id"], "worker": "usurper", "expires_at": 4e9})
    wait_until(lambda: any("lease lost" in record.getMessage() for record in caplog.records), "the lease loss")
    gate.opened.set()
    worker.stop("test over")
    thread.join(10)

    assert not thread.is_alive()
    assert queue.get(job["id"])["status"] == "processing"
    assert not local_store.exists(f"results/{job['id']}.png")
    assert local_store.get_json(f"leases/{job['id']}")["worker"] == "usurper"


def test_read_only_worker_claims_nothing(local_store: LocalStore, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(READ_ONLY=True)
    queue = Queue.from_settings(local_store, settings)
    job = queue.submit(png_bytes(), "in.png", "image/png")

    Worker(local_store, settings).run(until_empty=True)

    assert queue.get(job["id"])["status"] == "queued"


class ArchivedInputStore(LocalStore):
    """Refuses to read one job's input with a permanent, per-object error (like an archived blob)."""

    def __init__(self, root, blocked: str) -> None:
        super().__init__(root)
        self.blocked = blocked

    def stream(self, key, chunk_size=4 * 1024 * 1024):
        if key.startswith(self.blocked):
            raise PreconditionFailed(f"{key}: request rejected (HTTP 409 BlobArchived)")
        return super().stream(key, chunk_size)


def test_a_permanently_unreadable_input_fails_its_job_and_the_queue_moves_on(tmp_path, settings: Settings) -> None:
    store = LocalStore(tmp_path / "store")
    queue = Queue.from_settings(store, settings)
    stuck = queue.submit(png_bytes(), "archived.png", "image/png")
    fine = queue.submit(png_bytes(), "fine.png", "image/png")
    blocked = ArchivedInputStore(tmp_path / "store", stuck["input_key"])

    Worker(blocked, settings).run(until_empty=True)

    failed = queue.get(stuck["id"])
    assert failed["status"] == "failed" and failed["attempts"] == settings.MAX_ATTEMPTS
    assert "BlobArchived" in failed["error"]
    assert queue.get(fine["id"])["status"] == "done"


def test_a_stop_signal_received_while_starting_drains_without_claiming(
    local_store: LocalStore, settings: Settings
) -> None:
    from app.worker import run_worker

    queue = Queue.from_settings(local_store, settings)
    job = queue.submit(png_bytes((8, 8)), "in.png", "image/png")

    code = run_worker(settings, early_signals=["SIGTERM"])  # not burst: only the stop can end it

    assert code == 0, "a SIGTERM during start-up is a drain (exit 0), not a death by signal"
    assert queue.get(job["id"])["status"] == "queued", "the draining worker claimed nothing"
