"""The transfer pool: worker threads fed through a bounded queue, copies with retries and a byte budget.

The planner hands tasks over as it decides them (``submit`` blocks while the
queue is full), so the number of tasks waiting never exceeds a few per
worker whatever the size of the bucket.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, NamedTuple, TypeVar

from app.storage.base import (
    IntegrityError,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageConfigError,
    StorageError,
    TransientStorageError,
)

from .rules import RetryPolicy, compare, provenance_for, user_metadata

#: Parallel copies. Tuned on ``make bench`` (2 cores, both emulators on the
#: same machine, 2,000 small objects): 8 and 16 threads were 15-20 % slower,
#: 64 was slower too and spent more client CPU. Large objects are limited by
#: the byte budget below instead.
DEFAULT_WORKERS = 32
#: Bytes of objects in flight at once (a large object counts ``LARGE_OBJECT_COST``).
DEFAULT_MAX_INFLIGHT_BYTES = 128 * 1024 * 1024
#: What one large transfer is charged against the budget: the backends stream
#: large bodies holding at most one 8 MiB upload block, resumable chunk or
#: buffered body, plus a few stream chunks. 16 large transfers at once (128 MiB)
#: were 10-25 % faster on 16 x 32 MiB than 8 (the emulators overlap more work).
LARGE_OBJECT_COST = 8 * 1024 * 1024
#: Chunk size of the source read stream. Measured on 16 x 32 MiB: 256 KiB
#: used less client CPU than 64 KiB (more Python iterations) and 1 MiB.
STREAM_CHUNK = 256 * 1024
#: Tasks waiting per worker: enough that no worker idles while the planner reads the next page.
QUEUE_PER_WORKER = 4

T = TypeVar("T")
_END: Any = object()


class Progress:
    """Receives progress events from ``sync`` and ``verify``; this base ignores them.

    Methods are called from worker threads and must be thread-safe.
    """

    def phase(self, name: str, objects: int, nbytes: int) -> None:
        """A phase (``copy``, ``delete``, ``verify``) starts with this many objects and bytes (0: not known yet)."""

    def advance(self, objects: int = 0, nbytes: int = 0) -> None:
        """Objects finished and bytes moved since the last call."""

    def planned(self, objects: int, nbytes: int) -> None:
        """More objects and bytes decided for the current phase (a streamed plan grows while it copies)."""


class Aborted(Exception):
    """Raised in workers once the run has been stopped by a configuration error."""


def retrying(call: Callable[[], T], retry: RetryPolicy) -> T:
    """``call()``, retried with backoff on ``TransientStorageError``."""
    for attempt in range(max(1, retry.attempts)):
        try:
            return call()
        except TransientStorageError:
            if attempt >= retry.attempts - 1:
                raise
            time.sleep(retry.delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def failure_reason(err: BaseException) -> str:
    """A short, stable text for one object's permanent failure."""
    if isinstance(err, ObjectNotFound):
        return f"source object disappeared during the copy ({err})"
    if isinstance(err, IntegrityError):
        return f"checksum mismatch, nothing written: {err}"
    if isinstance(err, TransientStorageError):
        return f"gave up after retries: {err}"
    if isinstance(err, (StorageError, ValueError)):
        return str(err)
    return f"{type(err).__name__}: {err}"


class Outcome(NamedTuple):
    """How one planned copy ended: copied (with a mismatch if what landed differs) or failed."""

    key: str
    size: int
    mismatch: str | None = None
    failure: str | None = None


def copy_task(copier: "Copier", key: str, info: ObjectInfo, target_key: str) -> Outcome:
    """Copy one object and check what the put committed; one object's permanent failure is its outcome."""
    try:
        copied, written = copier.copy(info, target_key)
    except (StorageConfigError, Aborted):
        raise
    except Exception as err:  # one object's permanent failure must not stop the others
        return Outcome(key, info.size, failure=failure_reason(err))
    # The put verified the bytes in transit; this checks provenance and properties landed.
    return Outcome(key, copied.size, mismatch=compare(copied, written))


class _ByteBudget:
    """A counting semaphore on bytes in flight; one request larger than the budget runs alone."""

    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)
        self._used = 0
        self._cond = threading.Condition()

    def acquire(self, amount: int) -> None:
        with self._cond:
            while self._used and self._used + amount > self._limit:
                self._cond.wait()
            self._used += amount

    def release(self, amount: int) -> None:
        with self._cond:
            self._used -= amount
            self._cond.notify_all()


class Stops:
    """What stops a pool of workers: the first configuration error (``abort``) or bug, raised to the planner."""

    def __init__(self) -> None:
        self._errors: list[BaseException] = []
        self.abort: StorageConfigError | None = None

    def _raise_if_stopped(self) -> None:
        if self._errors:
            raise self._errors[0]
        if self.abort is not None:
            raise self.abort


class Pool(Stops, Generic[T]):
    """``workers`` threads running ``work`` on tasks submitted one by one through a bounded queue.

    Use as a context manager: leaving it waits for the submitted tasks and
    raises the first configuration error (which stops the pool early) or bug.
    Threads start lazily, so a run with nothing to do starts none.
    """

    def __init__(self, work: Callable[[T], None], workers: int) -> None:
        self._work = work
        self._workers = max(1, int(workers))
        self._queue: queue.Queue[Any] = queue.Queue(self._workers * QUEUE_PER_WORKER)
        self._threads: list[threading.Thread] = []
        super().__init__()
        self._stop = threading.Event()

    @property
    def stopped(self) -> bool:
        """True once a configuration error or a bug stopped the pool (submitting more is pointless)."""
        return self.abort is not None or self._stop.is_set()

    def submit(self, task: T) -> None:
        """Queue one task (blocks while the queue is full); raises the stopping error once stopped."""
        if len(self._threads) < self._workers and (not self._threads or not self._queue.empty()):
            self._start_one()
        while True:
            self._raise_if_stopped()
            try:
                self._queue.put(task, timeout=0.25)  # short waits keep Ctrl-C responsive
                return
            except queue.Full:
                continue

    def _start_one(self) -> None:
        thread = threading.Thread(target=self._loop, name=f"spotshift-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _loop(self) -> None:
        while True:
            task = self._queue.get()
            if task is _END:
                return
            if self.stopped:
                continue  # drain: nothing new starts once stopped
            try:
                self._work(task)
            except Aborted:
                pass
            except StorageConfigError as err:
                if self.abort is None:
                    self.abort = err
            except BaseException as err:  # a bug: stop the run and surface it
                self._errors.append(err)
                self._stop.set()

    def __enter__(self) -> "Pool[T]":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            # Ctrl-C or an error in the planner: start nothing new; a cut-off upload commits nothing.
            self._stop.set()
        for _ in self._threads:
            while True:
                try:
                    self._queue.put(_END, timeout=0.25)
                    break
                except queue.Full:
                    if self._stop.is_set():
                        self._drain()
        for thread in self._threads:
            while thread.is_alive():
                thread.join(0.25)  # short joins keep Ctrl-C responsive
        if exc_type is None:
            self._raise_if_stopped()

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            return


def _counted(chunks: Iterator[bytes], progress: Progress) -> Iterator[bytes]:
    for chunk in chunks:
        progress.advance(nbytes=len(chunk))
        yield chunk


class Copier:
    """Copies one object at a time with retries, within a shared byte budget (thread-safe)."""

    def __init__(self, source: ObjectStore, target: ObjectStore, *, retry: RetryPolicy,
                 progress: Progress | None, max_inflight_bytes: int) -> None:
        self.source = source
        self.target = target
        self.retry = retry
        self.progress = progress
        self.budget = _ByteBudget(max_inflight_bytes)
        self.pool: Pool[Any] | None = None

    def copy(self, info: ObjectInfo, target_key: str) -> tuple[ObjectInfo, ObjectInfo]:
        """Copy one object; return the source info it copied (fresher than the listing's if the
        source changed meanwhile) and the written target's info, or raise the last error."""
        cost = min(info.size, LARGE_OBJECT_COST)
        self.budget.acquire(cost)
        try:
            for attempt in range(max(1, self.retry.attempts)):
                if self.pool is not None and self.pool.stopped:
                    raise Aborted()
                try:
                    return info, self._copy_once(info, target_key)
                except TransientStorageError:
                    if attempt >= self.retry.attempts - 1:
                        raise
                except IntegrityError:
                    if attempt >= self.retry.attempts - 1:
                        raise
                    # The source may have been rewritten since it was listed:
                    # copy its current state (head raises ObjectNotFound if it is gone).
                    info = retrying(functools.partial(self.source.head, info.key), self.retry)
                time.sleep(self.retry.delay(attempt))
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self.budget.release(cost)

    def _copy_once(self, info: ObjectInfo, target_key: str) -> ObjectInfo:
        metadata = user_metadata(info)
        metadata.update(provenance_for(self.source, info))
        stream = self.source.stream(info.key, STREAM_CHUNK)
        body = _counted(stream, self.progress) if self.progress is not None else stream
        try:
            return self.target.put(
                target_key,
                body,
                content_type=info.content_type,
                content_encoding=info.content_encoding,
                cache_control=info.cache_control,
                metadata=metadata,
                expected_md5=info.md5,
                expected_crc32c=info.crc32c,
                size=info.size,
            )
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # releases the source's HTTP response if the put stopped early
