"""Bounded jobs: the transform runs in a child process with a time and a memory limit; the worker carries on."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator

import pytest

from app.imaging import ImageError
from app.imaging_sandbox import MIB, ChildTransform, JobCrashed, JobOutOfMemory, JobTimedOut
from app.queue import Queue
from app.settings import ConfigError, Settings, load_settings
from app.storage import LocalStore
from app.worker import Worker, bounded_transform

from . import transforms
from .images import png_bytes


def job_children() -> list[multiprocessing.process.BaseProcess]:
    """Job child processes of this process that are still running."""
    return [child for child in multiprocessing.active_children() if child.name == "spotshift-job"]


@pytest.fixture
def child_transform() -> Iterator[Callable[..., ChildTransform]]:
    """Make ChildTransforms (same arguments); every one is closed after the test."""
    made: list[ChildTransform] = []

    def make(fn: Callable[[bytes], bytes], **options: object) -> ChildTransform:
        transform = ChildTransform(fn, **options)  # type: ignore[arg-type]
        made.append(transform)
        return transform

    yield make
    for transform in made:
        transform.close()


def test_stalled_decoder_is_killed_and_its_job_failed_with_the_reason_after_max_attempts(
    local_store: LocalStore, make_settings: Callable[..., Settings], child_transform: Callable[..., ChildTransform]
) -> None:
    settings = make_settings(MAX_ATTEMPTS=2)
    queue = Queue.from_settings(local_store, settings)
    stalled = queue.submit(transforms.STALL + png_bytes(), "stall.png", "image/png")
    good = queue.submit(png_bytes(), "good.png", "image/png")
    transform = child_transform(transforms.stall_or_grayscale, timeout=0.5)
    worker = Worker(local_store, settings, process=transform)

    worker.run(until_empty=True)

    failed = queue.get(stalled["id"])
    assert (failed["status"], failed["attempts"]) == ("failed", 2)
    assert "no answer within the 0.5s limit" in failed["error"]
    assert "gave up after 2 attempts" in failed["error"]
    assert queue.get(good["id"])["status"] == "done"
    assert (worker.done, worker.failed) == (1, 1)


def test_timed_out_job_is_requeued_for_another_attempt(
    local_store: LocalStore, make_settings: Callable[..., Settings], child_transform: Callable[..., ChildTransform]
) -> None:
    settings = make_settings(MAX_ATTEMPTS=3)
    queue = Queue.from_settings(local_store, settings)
    job = queue.submit(transforms.STALL + png_bytes(), "stall.png", "image/png")
    worker = Worker(local_store, settings, process=child_transform(transforms.stall_or_grayscale, timeout=0.3))
    claim = queue.claim("test-worker")
    assert claim is not None

    worker._handle(claim)

    retried = queue.get(job["id"])
    assert (retried["status"], retried["attempts"]) == ("queued", 1)
    assert "JOB_TIMEOUT_SECONDS" in retried["error"]


def test_the_stalled_child_is_killed_not_left_running(child_transform: Callable[..., ChildTransform]) -> None:
    transform = child_transform(transforms.stall_or_grayscale, timeout=0.3)

    with pytest.raises(JobTimedOut):
        transform(transforms.STALL)

    assert transform.last_exitcode == -9
    assert job_children() == []


def test_a_child_killed_by_a_signal_is_a_retryable_crash_and_the_next_call_gets_a_fresh_child(
    child_transform: Callable[..., ChildTransform],
) -> None:
    transform = child_transform(transforms.stall_or_grayscale, timeout=30)

    with pytest.raises(JobCrashed, match="killed by signal 9"):
        transform(transforms.CRASH)
    result = transform(png_bytes())
    transform.close()

    assert result.startswith(b"\x89PNG")


def test_a_healthy_child_is_reused_and_is_not_the_worker_process(child_transform: Callable[..., ChildTransform]) -> None:
    transform = child_transform(transforms.pid, timeout=30)

    first, second = transform(b""), transform(b"")
    transform.close()

    assert first == second
    assert int(first) != os.getpid()
    assert job_children() == []


def test_transform_errors_reach_the_worker_with_their_type() -> None:
    transform = bounded_transform(Settings(JOB_TIMEOUT_SECONDS=30))

    with pytest.raises(ImageError, match="not a supported image"):
        transform(b"not an image")
    transform.close()


def test_memory_over_the_per_job_cap_fails_in_the_child_only(child_transform: Callable[..., ChildTransform]) -> None:
    transform = child_transform(transforms.allocate, timeout=30, memory_bytes=128 * MIB)

    with pytest.raises(JobOutOfMemory, match="128 MiB memory limit"):
        transform(b"512")
    within = transform(b"16")
    transform.close()

    assert int(within) == 16 * MIB


def test_an_image_too_big_for_the_memory_cap_fails_its_job_and_the_worker_carries_on(
    local_store: LocalStore, make_settings: Callable[..., Settings]
) -> None:
    # 6000 x 4000 RGB decodes to 96 MiB (Pillow keeps 4 bytes a pixel): over a 128 MiB cap with the rest.
    settings = make_settings(JOB_MEMORY_MB=128)
    queue = Queue.from_settings(local_store, settings)
    big = queue.submit(png_bytes((6000, 4000)), "big.png", "image/png")
    small = queue.submit(png_bytes(), "small.png", "image/png")
    worker = Worker(local_store, settings)

    worker.run(until_empty=True)

    failed = queue.get(big["id"])
    assert (failed["status"], failed["attempts"]) == ("failed", 1)
    assert failed["error"].startswith("over the memory limit:")
    assert queue.get(small["id"])["status"] == "done"
    assert job_children() == []


@pytest.mark.parametrize(("name", "value"), [("JOB_TIMEOUT_SECONDS", "0"), ("JOB_MEMORY_MB", "64")])
def test_job_limits_below_their_minimum_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_job_limits_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_TIMEOUT_SECONDS", "7.5")
    monkeypatch.setenv("JOB_MEMORY_MB", "640")

    transform = bounded_transform(load_settings())

    assert (transform.timeout, transform.memory_bytes) == (7.5, 640 * MIB)


def test_a_drain_kills_the_stalled_child_and_releases_its_job(
    local_store: LocalStore, make_settings: Callable[..., Settings], child_transform: Callable[..., ChildTransform]
) -> None:
    from .test_worker import start, wait_until

    settings = make_settings(WORKER_GRACE_SECONDS=0.2)
    queue = Queue.from_settings(local_store, settings)
    job = queue.submit(transforms.STALL + png_bytes(), "stall.png", "image/png")
    worker = Worker(local_store, settings, process=child_transform(transforms.stall_or_grayscale, timeout=600))
    thread = start(worker)
    wait_until(lambda: queue.get(job["id"])["status"] == "processing" and job_children() != [], "the child to start")

    worker.stop("test drain")
    thread.join(10)

    assert not thread.is_alive()
    wait_until(lambda: job_children() == [], "the stalled child to be killed")
    assert queue.get(job["id"])["status"] == "queued"
