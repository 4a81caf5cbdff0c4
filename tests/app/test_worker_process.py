"""Worker processes killed or stopped mid-job: the job is never lost and never run twice at once."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.queue import Queue
from app.settings import Settings
from app.storage import LocalStore
from app.worker import Worker

from .conftest import subprocess_env
from .images import png_bytes
from .test_worker import wait_until

SLOW_WORKER = Path(__file__).with_name("slow_worker.py")


@pytest.fixture
def spawn(local_store: LocalStore) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a worker process on the test's store whose transform takes ``delay`` seconds."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(delay: float, **settings: object) -> subprocess.Popen[bytes]:
        env = subprocess_env(
            STORAGE_BACKEND="local",
            LOCAL_STORAGE_PATH=local_store.root,
            WORKER_POLL_SECONDS=0.05,
            **settings,
        )
        process = subprocess.Popen([sys.executable, str(SLOW_WORKER), str(delay)], env=env, stderr=subprocess.PIPE)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stderr:
            process.stderr.close()


def wait_for_processing(queue: Queue, job_id: str, process: subprocess.Popen[bytes]) -> None:
    wait_until(lambda: process.poll() is not None or queue.get(job_id)["status"] == "processing", "the claim")
    assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""


def test_job_of_a_worker_killed_mid_job_is_finished_by_another_worker(
    local_store: LocalStore, make_settings: Callable[..., Settings], spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    settings = make_settings(LEASE_SECONDS=1, WORKER_ID="rescuer")
    queue = Queue.from_settings(local_store, settings)
    job = queue.submit(png_bytes(), "in.png", "image/png")
    doomed = spawn(60, LEASE_SECONDS=1, WORKER_ID="doomed")
    wait_for_processing(queue, job["id"], doomed)

    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    Worker(local_store, settings).run(until_empty=True)

    done = queue.get(job["id"])
    assert doomed.returncode == -signal.SIGKILL
    assert (done["status"], done["worker"], done["attempts"]) == ("done", "rescuer", 2)
    assert local_store.exists(f"results/{job['id']}.png")


def test_sigterm_releases_an_unfinished_job_and_exits_zero(
    local_store: LocalStore, queue: Queue, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    job = queue.submit(png_bytes(), "in.png", "image/png")
    worker = spawn(60, WORKER_GRACE_SECONDS=0.2, WORKER_ID="evicted")
    wait_for_processing(queue, job["id"], worker)

    worker.send_signal(signal.SIGTERM)
    code = worker.wait(timeout=20)

    released = queue.get(job["id"])
    assert code == 0
    assert (released["status"], released["attempts"], released["worker"]) == ("queued", 0, None)
    assert not local_store.exists(f"leases/{job['id']}")
    assert local_store.exists(f"queue/{job['id']}")


def test_sigterm_lets_a_short_job_finish_within_the_grace_period(
    queue: Queue, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    job = queue.submit(png_bytes(), "in.png", "image/png")
    worker = spawn(1.5, WORKER_GRACE_SECONDS=20, WORKER_ID="graceful")
    wait_for_processing(queue, job["id"], worker)

    worker.send_signal(signal.SIGTERM)
    code = worker.wait(timeout=20)

    assert code == 0
    assert queue.get(job["id"])["status"] == "done"
