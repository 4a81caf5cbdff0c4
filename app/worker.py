"""The spot-safe worker: claim a job, process it under a renewed lease, drain on notice.

A job runs in a daemon thread while the main thread watches three things: the
job finishing, the lease being lost to another worker, and a drain request
(SIGTERM, SIGINT or an eviction notice). A draining worker claims nothing new
and gives its job ``WORKER_GRACE_SECONDS`` to finish; past that it releases
the lease so another worker can start at once, and exits.

The default transform runs in a child process (``app.imaging_sandbox``) so a
job is bounded: after ``JOB_TIMEOUT_SECONDS`` its child is killed and the job
retried (failed with the reason once ``MAX_ATTEMPTS`` are used), and the child's
address space is capped at ``JOB_MEMORY_MB``. The worker carries on either way.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from app.imaging import ImageError, configure, grayscale_png
from app.imaging_sandbox import MIB, ChildTransform, JobLimitExceeded, JobOutOfMemory
from app.queue import Claim, LeaseLost, Queue
from app.settings import Settings
from app.storage.base import ObjectNotFound, ObjectStore, StorageConfigError, StorageError, TransientStorageError

log = logging.getLogger(__name__)

#: Consecutive storage errors after which the worker gives up (its restart
#: policy brings it back; a crash loop is visible, a silent spin is not).
MAX_STORAGE_FAILURES = 5


class StorageLost(Exception):
    """The store is unreachable or misconfigured: the worker must stop."""


def bounded_transform(settings: Settings) -> ChildTransform:
    """The grayscale transform in a child process, bounded by the job time and memory limits."""
    return ChildTransform(
        functools.partial(grayscale_png, max_pixels=settings.MAX_IMAGE_PIXELS),
        timeout=settings.JOB_TIMEOUT_SECONDS,
        memory_bytes=settings.JOB_MEMORY_MB * MIB,
        initializer=functools.partial(configure, settings.MAX_IMAGE_PIXELS),
    )


class _Task(threading.Thread):
    """Runs one job's processing so the main thread can keep watching the lease and signals."""

    def __init__(self, fn: Callable[[], bytes], wake: threading.Event, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = fn
        self._wake = wake
        self.result: bytes | None = None
        self.error: Exception | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            self.result = self._fn()
        except Exception as exc:  # handed to the main thread, which classifies it
            self.error = exc
        finally:
            self.finished.set()
            self._wake.set()


class _LeaseRenewer(threading.Thread):
    """Renews a claim's lease every ``interval`` seconds until stopped or the lease is lost."""

    def __init__(self, queue: Queue, claim: Claim, interval: float, wake: threading.Event) -> None:
        super().__init__(name=f"renew-{claim.job_id[:8]}", daemon=True)
        self._queue = queue
        self._claim = claim
        self._interval = interval
        self._wake = wake
        self._stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._claim.lease = self._queue.renew(self._claim.lease)
            except LeaseLost:
                self.lost = True
                self._wake.set()
                return
            except StorageError as exc:
                log.warning("job %s: lease renewal failed, will retry: %s", self._claim.job_id, exc)

    def stop(self) -> None:
        self._stopped.set()
        self.join()


class Worker:
    """Processes queued jobs from one store until stopped, or until the queue is empty in burst mode.

    Args:
        store: where the queue lives.
        settings: lease length, attempts, grace period, poll interval, worker id.
        queue: a ready Queue (default: built from ``store`` and ``settings``).
        process: input bytes -> result bytes, run in a thread of this process
            (default: grayscale PNG in a bounded child process, ``bounded_transform``).
    """

    def __init__(
        self,
        store: ObjectStore,
        settings: Settings,
        *,
        queue: Queue | None = None,
        process: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.settings = settings
        self.worker_id = settings.WORKER_ID
        self.queue = queue or Queue.from_settings(store, settings)
        self._owns_process = process is None
        self._process = process or bounded_transform(settings)
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._deadline = float("inf")
        self.stop_reason: str | None = None
        self.done = 0
        self.failed = 0

    @property
    def stopping(self) -> bool:
        """True once a drain was requested."""
        return self._stopping.is_set()

    def stop(self, reason: str = "stop requested") -> None:
        """Drain: claim nothing more; the current job gets the grace period (none on a second call)."""
        now = time.monotonic()
        if self._stopping.is_set():
            self._deadline = now
            log.warning("worker %s: second stop request (%s), releasing now", self.worker_id, reason)
        else:
            self.stop_reason = reason
            self._deadline = now + self.settings.WORKER_GRACE_SECONDS
            self._stopping.set()
            log.warning(
                "worker %s: draining (%s), %.0fs grace for the current job",
                self.worker_id, reason, self.settings.WORKER_GRACE_SECONDS,
            )
        self._wake.set()

    @contextlib.contextmanager
    def handle_signals(self) -> Iterator[None]:
        """Turn SIGTERM and SIGINT into ``stop()`` while inside the block (main thread only)."""

        def on_signal(signum: int, _frame: Any) -> None:
            self.stop(f"received {signal.Signals(signum).name}")

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def run(self, until_empty: bool = False) -> None:
        """Claim and process jobs until stopped, or (``until_empty``) until no job is queued or in progress.

        Raises ``StorageLost`` when the store is misconfigured or keeps failing.
        """
        mode = "burst" if until_empty else "continuous"
        log.info("worker %s: started (%s mode, store %s)", self.worker_id, mode, self.queue.store.url)
        if self.settings.READ_ONLY:
            # The cutover freeze: results written now would differ from the final copy.
            log.warning("worker %s: READ_ONLY is set, claiming no jobs", self.worker_id)
            while not until_empty and not self._stopping.wait(self.settings.WORKER_POLL_SECONDS):
                pass
            return
        try:
            self._loop(until_empty)
        finally:
            if self._owns_process and isinstance(self._process, ChildTransform):
                self._process.close()
        try:
            self.queue.flush()  # leases of the last jobs, deleted once a second old
        except StorageError as exc:
            log.warning("worker %s: leftover leases not deleted (they expire): %s", self.worker_id, exc)
        log.info(
            "worker %s: stopped (%s); %d done, %d failed",
            self.worker_id, self.stop_reason or "queue empty", self.done, self.failed,
        )

    def _loop(self, until_empty: bool) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                claim = self.queue.claim(self.worker_id)
                if claim is not None:
                    self._handle(claim)
                elif until_empty and not self.queue.pending():
                    break
                else:
                    self._stopping.wait(self.settings.WORKER_POLL_SECONDS)
                failures = 0
            except StorageConfigError as exc:
                raise StorageLost(f"worker {self.worker_id}: storage unusable: {exc}") from exc
            except StorageError as exc:
                failures += 1
                if failures >= MAX_STORAGE_FAILURES:
                    raise StorageLost(
                        f"worker {self.worker_id}: storage failed {failures} times in a row: {exc}"
                    ) from exc
                backoff = min(30.0, self.settings.WORKER_POLL_SECONDS * 2**failures)
                log.warning("worker %s: storage error (%s), retrying in %.1fs", self.worker_id, exc, backoff)
                self._stopping.wait(backoff)

    def _handle(self, claim: Claim) -> None:
        job_id = claim.job_id
        self._wake.clear()
        task = _Task(lambda: self._process(self.queue.read_input(claim.job)), self._wake, f"job-{job_id[:8]}")
        renewer = _LeaseRenewer(self.queue, claim, self.queue.lease_seconds / 3, self._wake)
        renewer.start()
        task.start()
        try:
            outcome = self._wait(task, renewer)
        finally:
            renewer.stop()
        if outcome != "done":
            self._cancel()
        if outcome == "lost":
            log.warning("worker %s: job %s: lease lost to another worker, abandoning it", self.worker_id, job_id)
            return
        if outcome == "timeout":
            log.warning("worker %s: job %s: not finished within the grace period, releasing it", self.worker_id, job_id)
            self.queue.release(claim.lease)
            return
        try:
            self._finish(claim, task)
        except LeaseLost:
            log.warning("worker %s: job %s: lease lost before the job was recorded", self.worker_id, job_id)

    def _cancel(self) -> None:
        """Stop a transform still running for a job this worker gave up (a child process can be killed)."""
        cancel = getattr(self._process, "cancel", None)
        if callable(cancel):
            cancel()

    def _wait(self, task: _Task, renewer: _LeaseRenewer) -> str:
        while True:
            if task.finished.is_set():
                return "done"
            if renewer.lost:
                return "lost"
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            # A bounded wait keeps the loop responsive even if a wake-up is missed.
            self._wake.wait(min(remaining, 1.0))
            self._wake.clear()

    def _finish(self, claim: Claim, task: _Task) -> None:
        job_id, error = claim.job_id, task.error
        if error is None:
            assert task.result is not None
            self.queue.complete(claim, task.result)
            self.done += 1
        elif isinstance(error, ImageError):
            self.queue.fail(claim, f"invalid image: {error}")
            self.failed += 1
        elif isinstance(error, JobOutOfMemory):
            # The same input needs the same memory next time: retrying cannot help.
            log.warning("worker %s: job %s: %s", self.worker_id, job_id, error)
            self.queue.fail(claim, f"over the memory limit: {error}")
            self.failed += 1
        elif isinstance(error, JobLimitExceeded):
            # Timed out or its process died: the worker is fine; the job gets another attempt.
            log.warning("worker %s: job %s: %s", self.worker_id, job_id, error)
            job = self.queue.retry(claim, str(error))
            if job["status"] == "failed":
                self.failed += 1
        elif isinstance(error, ObjectNotFound):
            self.queue.fail(claim, f"input missing: {error}")
            self.failed += 1
        elif isinstance(error, (TransientStorageError, StorageConfigError)):
            # The store is down or unusable, not the job's fault: give it back and
            # let run() count the storage error.
            with contextlib.suppress(StorageError):
                self.queue.release(claim.lease)
            raise error
        elif isinstance(error, StorageError):
            # A permanent error for this one object (say, an archived blob): an
            # attempt that counts, so the job ends failed instead of blocking the queue.
            job = self.queue.retry(claim, f"reading the input failed: {error}")
            if job["status"] == "failed":
                self.failed += 1
        else:
            log.error("worker %s: job %s: processing error", self.worker_id, job_id, exc_info=error)
            job = self.queue.retry(claim, f"{type(error).__name__}: {error}")
            if job["status"] == "failed":
                self.failed += 1


def run_worker(
    settings: Settings,
    *,
    burst: bool = False,
    process: Callable[[bytes], bytes] | None = None,
    early_signals: Sequence[str] = (),
) -> int:
    """Run a worker process: build the store, watch signals and eviction notices; return the exit code.

    ``early_signals`` names stop signals that arrived while the process started; the
    worker then drains at once (exit 0) instead of claiming jobs.
    ``StorageConfigError`` from building or pinging the store propagates (a configuration error).
    """
    from app.eviction import build_watcher

    configure(settings.MAX_IMAGE_PIXELS)
    store = settings.build_store()
    try:
        try:
            store.ping()
        except StorageConfigError:
            raise
        except StorageError as exc:
            log.warning("worker %s: store %s not reachable yet: %s", settings.WORKER_ID, store.url, exc)
        worker = Worker(store, settings, process=process)
        watcher = build_watcher(settings, worker.stop)
        if watcher is not None:
            watcher.start()
        try:
            with worker.handle_signals():
                for name in early_signals:
                    worker.stop(f"received {name} while starting")
                worker.run(until_empty=burst)
        except StorageLost as exc:
            log.error("%s", exc)
            return 1
        finally:
            if watcher is not None:
                watcher.stop()
                # The job is finished or released: let the platform take the VM now.
                watcher.approve()
        return 0
    finally:
        store.close()
