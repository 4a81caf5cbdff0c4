"""Copies from one local directory to another, spread over worker processes.

Between two ``file://`` stores a copy is Python work and filesystem calls,
all on one core under the GIL: the transfer pool's threads only take turns
(measured on 10,000 objects of 1-4 KiB: 32 threads took 8.4 s, one 4.8 s).
Here the planner hands batches of keys to worker processes, each copying
its batch in turn with its own two stores on the same directories. A task
carries what the listing's stat saw (``LocalStore.listing_stat``); the
worker reads the object's sidecar itself, so the planner does no per-object
work beyond the merge. A run that plans fewer than one
batch of copies starts no process and copies them in the planner's thread.

Workers ignore SIGINT: on Ctrl-C the planner stops handing out batches and
waits for those already running (each a few hundred small objects), as the
thread pool waits for its running copies. A worker whose planner is killed
exits within ``PARENT_POLL_SECONDS`` (its task queue would never close: a
spawned worker holds both ends of it), leaving at most the object it was
writing as a temporary file, as a killed thread would. (``serve`` is that
start-up; the listing's scanner processes, ``migration.scanning``, use it too.)
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from app.storage.base import ObjectInfo, StorageConfigError
from app.storage.local import LocalStore

from .rules import RetryPolicy
from .transfer import DEFAULT_MAX_INFLIGHT_BYTES, Copier, Outcome, Stops, copy_task, failure_reason, retrying

#: Copies per batch handed to a worker: large enough that the hand-over (a pickle each way) is a
#: small share of the batch's work, small enough that Ctrl-C waits well under a second.
BATCH = 256
#: A batch closes early once its objects hold this many bytes, so one worker is not left with most of the data.
BATCH_BYTES = 64 * 1024 * 1024
#: At most this many worker processes, whatever the machine.
MAX_PROCESSES = 8
#: How often a worker looks whether its planner is still alive.
PARENT_POLL_SECONDS = 0.2

#: (relative key, source key, target key, size and ``LocalStore.listing_stat`` of the listed source object) of one copy.
Task = tuple[str, str, str, int, "tuple[int, int] | None"]


def local_pair(source: object, target: object) -> bool:
    """True when both stores are local directories: their copies run in worker processes."""
    return isinstance(source, LocalStore) and isinstance(target, LocalStore)


def spawn_context() -> Any:
    """The ``spawn`` start method's context (``multiprocessing`` is imported only when a pool starts)."""
    import multiprocessing

    return multiprocessing.get_context("spawn")


def process_count(workers: int) -> int:
    """Worker processes for ``workers`` parallel transfers on this machine: one per core it may use at most."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(workers, cores, MAX_PROCESSES))


class _Worker:
    """Copies batches of keys from ``source`` to ``target``, one object after another."""

    def __init__(self, source: LocalStore, target: LocalStore, retry: RetryPolicy) -> None:
        self.source = source
        self.retry = retry
        self.copier = Copier(source, target, retry=retry, progress=None, max_inflight_bytes=DEFAULT_MAX_INFLIGHT_BYTES)

    def run(self, tasks: list[Task]) -> tuple[list[Outcome], str | None]:
        """The outcome of each copy, and the configuration error that stopped the batch (if one did)."""
        outcomes: list[Outcome] = []
        for key, source_key, target_key, size, listing_stat in tasks:
            try:
                if listing_stat is None:
                    info = retrying(lambda: self.source.head(source_key), self.retry)
                else:
                    info = self.source.listed(source_key, size, listing_stat)
                outcomes.append(copy_task(self.copier, key, info, target_key))
            except StorageConfigError as err:
                return outcomes, str(err)
            except Exception as err:  # the source object went away, or a head failed for good
                outcomes.append(Outcome(key, 0, failure=failure_reason(err)))
        return outcomes, None


_WORKER: _Worker | None = None


def _start(planner: int, source_root: str, target_root: str, durable: bool, retry: RetryPolicy) -> None:
    """Worker process start-up: open both stores (the planner decides when to stop, not Ctrl-C)."""
    global _WORKER
    serve(planner)
    _WORKER = _Worker(LocalStore(source_root, create=False), LocalStore(target_root, create=False, durable=durable),
                      retry)


def serve(planner: int) -> None:
    """Start-up of any worker process of ``planner``: Ctrl-C is the planner's to handle; exit once it is gone.

    The planner's pid comes from the planner: one killed while this process was
    still starting up is no longer its parent by now.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(planner,), name="spotshift-parent", daemon=True).start()


def _watch_parent(parent: int) -> None:
    """Exit once the planner is gone (killed): its task queue would never end, nor would this process."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def _run(tasks: list[Task]) -> tuple[list[Outcome], str | None]:
    assert _WORKER is not None, "worker process not started"
    return _WORKER.run(tasks)


class ProcessPool(Stops):
    """Batches the planner's copies to ``processes`` worker processes; ``record`` gets every outcome.

    Used like ``transfer.Pool``: ``submit((key, info))`` per copy, inside a
    ``with`` block whose end waits for every copy and raises the first
    configuration error (which stops handing out work) or bug.
    """

    def __init__(self, source: LocalStore, target: LocalStore, *, target_prefix: str, processes: int,
                 retry: RetryPolicy, record: Callable[[Outcome, int], None]) -> None:
        self.source, self.target = source, target
        self.target_prefix = target_prefix
        self.processes = processes
        self.retry = retry
        self.record = record
        self._batch: list[Task] = []
        self._batch_bytes = 0
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        # Batches handed out and not finished: two per worker keeps each busy while the planner reads on.
        self._slots = threading.BoundedSemaphore(2 * processes)
        self._futures: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()
        super().__init__()
        self.copied = 0

    def submit(self, task: tuple[str, ObjectInfo]) -> None:
        """Add one copy to the current batch; hand the batch out once it is full."""
        self._raise_if_stopped()
        key, info = task
        self._batch.append((key, info.key, self.target_prefix + key, info.size, LocalStore.listing_stat(info)))
        self._batch_bytes += info.size
        if len(self._batch) >= BATCH or self._batch_bytes >= BATCH_BYTES:
            self._hand_out()

    def _hand_out(self) -> None:
        tasks, self._batch, self._batch_bytes = self._batch, [], 0
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self.processes, mp_context=spawn_context(), initializer=_start,
                initargs=(os.getpid(), str(self.source.root), str(self.target.root), self.target.durable,
                          self.retry))
        while not self._slots.acquire(timeout=0.25):  # short waits keep Ctrl-C responsive
            self._raise_if_stopped()
        future = self._executor.submit(_run, tasks)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)
        self._slots.release()
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:  # a bug in the worker, or a worker killed: stop the run and surface it
            self._errors.append(error)
            return
        outcomes, abort = future.result()
        self._apply(outcomes, abort)

    def _apply(self, outcomes: list[Outcome], abort: str | None) -> None:
        for outcome in outcomes:
            if outcome.failure is None:
                self.copied += 1
            self.record(outcome, outcome.size if outcome.failure is None else 0)
        if abort is not None and self.abort is None:
            self.abort = StorageConfigError(abort)

    def __enter__(self) -> "ProcessPool":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None and self._batch:
                if self._executor is None:
                    # Fewer copies than one batch: starting a process would cost more than copying them here.
                    tasks, self._batch = self._batch, []
                    self._apply(*_Worker(self.source, self.target, self.retry).run(tasks))
                else:
                    self._hand_out()
        finally:
            if self._executor is not None:
                # Ctrl-C or an error in the planner: nothing new starts; running batches finish.
                self._executor.shutdown(wait=True, cancel_futures=exc_type is not None)
            if self.copied:
                self.target.written_elsewhere()
        if exc_type is None:
            self._raise_if_stopped()

