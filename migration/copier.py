"""The migration engine: plan → copy → verify → report, written once against ``ObjectStore``.

Any direction works (GCS → Azure, Azure → GCS for rollback, local either
way): the engine only calls the interface's ``list``, ``stream``, ``put``,
``head`` and ``delete``.

* **Plan** lists both sides in parallel and copies an object when it is
  missing on the target, differs in size or content, or its content type,
  encoding, cache control or user metadata differ. Content is compared by
  MD5, by CRC32C where the source has no MD5 (GCS composite objects), and by
  the source version where the source has neither.
* **Provenance**: every blob written carries, in its user metadata, the
  source location and version and the source's checksums
  (``PROVENANCE_KEYS``). The next run decides "unchanged" from the two
  listings alone, without reading bytes. A target blob without provenance
  (written by something else) is never trusted.
* **Copy** streams ``source.stream(key)`` into ``target.put(key, ...)`` with
  the expected checksums and size, on a bounded thread pool sharing one
  store (one client and connection pool) per side. Large objects also take
  their share of a byte budget, so memory stays bounded whatever the sizes.
  The backends check the checksums over the bytes in transit and commit
  nothing on a mismatch, so a blob is either absent or complete with its
  provenance: a run killed at any moment resumes by running it again.
* **Resilience**: ``TransientStorageError`` (and a checksum mismatch, after
  looking whether the source changed meanwhile) is retried with exponential
  backoff and full jitter; a permanent error for one object is recorded and
  the others go on; ``StorageConfigError`` (missing bucket, access denied)
  stops the run, since every other object would fail the same way.
* **Verify** compares every source object with its copy: size, provenance
  checksums equal to the source's, and the target's own MD5 or CRC32C where
  it has one (which catches bytes altered behind the engine's back), then
  content type and metadata. ``sync`` checks what each put committed (the
  put itself verified the bytes in transit) plus the plan's listing for the
  rest; ``verify`` lists both sides afresh; ``deep``/``strict`` re-list and
  re-read the target's bytes and recompute their checksums.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from app.storage.base import (
    Hasher,
    IntegrityError,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageConfigError,
    StorageError,
    TransientStorageError,
)

from .report import Problem, SyncReport, VerifyReport

#: Parallel copies. Tuned on ``make bench`` (2 cores, both emulators on the
#: same machine, 2,000 small objects): 8 and 16 threads were 15-20 % slower,
#: 64 was slower too and spent more client CPU. Large objects are limited by
#: the byte budget below instead.
DEFAULT_WORKERS = 32
#: ``delete=True`` refuses to delete more target objects than this unless raised.
DEFAULT_MAX_DELETE = 100
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

#: Target metadata naming the copied object (``gs://bucket/key``, percent-encoded to ASCII).
PROVENANCE_SOURCE = "spotshift_source"
#: The source object's version (GCS generation, Azure ETag, local stamp) when it was copied.
PROVENANCE_VERSION = "spotshift_source_version"
#: The source object's MD5 (hex), when the source had one.
PROVENANCE_MD5 = "spotshift_source_md5"
#: The source object's CRC32C (hex), when the source had one.
PROVENANCE_CRC32C = "spotshift_source_crc32c"
#: Every provenance key the engine writes.
PROVENANCE_KEYS = (PROVENANCE_SOURCE, PROVENANCE_VERSION, PROVENANCE_MD5, PROVENANCE_CRC32C)
#: User-metadata names starting with this belong to spotshift and are never carried over.
RESERVED_METADATA_PREFIX = "spotshift_"

_DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Characters left as they are in the provenance URL; everything else is
# percent-encoded so the value is printable ASCII (Azure metadata travels as HTTP headers).
_URL_SAFE = "/:@!$&'()*+,;=-._~"

T = TypeVar("T")


class UsageError(ValueError):
    """The run cannot start as asked (a bad argument); nothing was written."""


class DeleteLimitExceeded(UsageError):
    """``delete=True`` would remove more target objects than ``max_delete`` allows; nothing was written."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for transient storage errors."""

    attempts: int = 4
    """Tries per operation, the first included."""
    base_delay: float = 0.25
    """Seconds; the n-th retry waits a random time up to ``base_delay * 2**n``."""
    max_delay: float = 8.0
    """Cap on one wait, seconds."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): full jitter."""
        return random.uniform(0.0, min(self.max_delay, self.base_delay * (2**attempt)))


DEFAULT_RETRY = RetryPolicy()


class Progress:
    """Receives progress events from ``sync`` and ``verify``; this base ignores them.

    Methods are called from worker threads and must be thread-safe.
    """

    def phase(self, name: str, objects: int, nbytes: int) -> None:
        """A phase (``copy``, ``delete``, ``verify``) starts with this many objects and bytes."""

    def advance(self, objects: int = 0, nbytes: int = 0) -> None:
        """Objects finished and bytes moved since the last call."""


# -- keys, filters, provenance ----------------------------------------------------


def normalize_prefix(prefix: str) -> str:
    """A prefix names a folder: no leading ``/``, one trailing ``/`` (``""`` stays the whole store)."""
    prefix = (prefix or "").lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return prefix


@dataclass(frozen=True)
class KeyFilter:
    """``fnmatch`` globs on the key relative to the prefix: kept if it matches an include (when any) and no exclude."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, include: Iterable[str] | None = (), exclude: Iterable[str] | None = ()) -> "KeyFilter":
        """Build from any iterables of globs (a lone string counts as one glob)."""
        return cls(_globs(include), _globs(exclude))

    def __call__(self, relative_key: str) -> bool:
        if self.include and not any(fnmatch.fnmatchcase(relative_key, g) for g in self.include):
            return False
        return not any(fnmatch.fnmatchcase(relative_key, g) for g in self.exclude)


def _globs(value: Iterable[str] | str | None) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value if v)


def location_url(store: ObjectStore, prefix: str) -> str:
    """``gs://bucket/prefix`` for reports (the store's URL never holds a credential)."""
    prefix = normalize_prefix(prefix)
    return f"{store.url}/{prefix}".rstrip("/") if prefix else store.url


def provenance_for(source: ObjectStore, info: ObjectInfo) -> dict[str, str]:
    """The provenance metadata a copy of ``info`` carries."""
    meta = {PROVENANCE_SOURCE: quote(f"{source.url}/{info.key}", safe=_URL_SAFE)}
    if info.version:
        meta[PROVENANCE_VERSION] = info.version
    if info.md5:
        meta[PROVENANCE_MD5] = info.md5.lower()
    if info.crc32c:
        meta[PROVENANCE_CRC32C] = info.crc32c.lower()
    return meta


def user_metadata(info: ObjectInfo) -> dict[str, str]:
    """The object's own user metadata, without spotshift's reserved entries (lowercase names)."""
    return {
        name.lower(): value or ""
        for name, value in info.metadata.items()
        if not name.lower().startswith(RESERVED_METADATA_PREFIX)
    }


def _provenance(info: ObjectInfo) -> dict[str, str]:
    lowered = {name.lower(): value for name, value in info.metadata.items()}
    return {key: (lowered[key] or "").lower() if key != PROVENANCE_SOURCE else lowered[key]
            for key in PROVENANCE_KEYS if lowered.get(key)}


def compare(source: ObjectInfo, target: ObjectInfo | None) -> str | None:
    """Why ``target`` is not a verified copy of ``source`` (a short reason), or None when it is.

    Decided from listings alone: size, the provenance checksums against the
    source's, the target's own MD5/CRC32C against the provenance (catches
    bytes altered after the copy), then content type, encoding, cache
    control and user metadata.
    """
    if target is None:
        return "missing on target"
    if target.size != source.size:
        return f"size differs (source {source.size} B, target {target.size} B)"
    prov = _provenance(target)
    if not (prov.keys() & {PROVENANCE_MD5, PROVENANCE_CRC32C, PROVENANCE_VERSION}):
        return "target has no spotshift provenance (written by something else)"
    if source.md5:
        md5 = source.md5.lower()
        if prov.get(PROVENANCE_MD5) != md5:
            return "content differs (MD5)"
        if target.md5 and target.md5.lower() != md5:
            return "target bytes altered after the copy (its MD5 differs from the source's)"
    elif source.crc32c:
        crc = source.crc32c.lower()
        if prov.get(PROVENANCE_CRC32C) != crc:
            return "content differs (CRC32C)"
        if target.crc32c and target.crc32c.lower() != crc:
            return "target bytes altered after the copy (its CRC32C differs from the source's)"
    elif prov.get(PROVENANCE_VERSION) != (source.version or "").lower():
        return "source changed since the copy (version differs; the source has no checksum)"
    if (source.content_type or _DEFAULT_CONTENT_TYPE) != (target.content_type or _DEFAULT_CONTENT_TYPE):
        return f"content type differs ({source.content_type!r} vs {target.content_type!r})"
    if (source.content_encoding or None) != (target.content_encoding or None):
        return "content encoding differs"
    if (source.cache_control or None) != (target.cache_control or None):
        return "cache control differs"
    if user_metadata(source) != user_metadata(target):
        return "user metadata differs"
    return None


def content_id(info: ObjectInfo) -> str:
    """What identifies an object's content in a manifest, equal for a source object and its copy.

    A copy is identified by the checksum kind its source had (MD5, else
    CRC32C, else version); its own checksum of that kind wins over the
    provenance value, so altered bytes change the id.
    """
    prov = _provenance(info)
    if prov.get(PROVENANCE_MD5):
        return "md5:" + (info.md5 or prov[PROVENANCE_MD5]).lower()
    if prov.get(PROVENANCE_CRC32C):
        return "crc32c:" + (info.crc32c or prov[PROVENANCE_CRC32C]).lower()
    if prov.get(PROVENANCE_VERSION):
        return "version:" + prov[PROVENANCE_VERSION]
    if info.md5:
        return "md5:" + info.md5.lower()
    if info.crc32c:
        return "crc32c:" + info.crc32c.lower()
    return "version:" + (info.version or "").lower()


# -- listing ----------------------------------------------------------------------


def _retrying(call: Callable[[], T], retry: RetryPolicy) -> T:
    for attempt in range(max(1, retry.attempts)):
        try:
            return call()
        except TransientStorageError:
            if attempt >= retry.attempts - 1:
                raise
            time.sleep(retry.delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class Listing:
    """The objects under a prefix that pass the filter, by key relative to the prefix."""

    objects: dict[str, ObjectInfo]
    ignored: int = 0
    """Folder markers (keys ending in ``/``), which hold no data and no backend can write."""


class EarlyListing:
    """One store's listing under a prefix, started in a background thread before a plan needs it.

    The CLI starts the target's listing as soon as the target is open, so the
    listing's round trips overlap the other SDK's import (on a 2,000-object
    no-op rerun, about 0.3 s of a second). The next ``plan``/``sync``/``verify``
    given it takes the result once instead of listing again; a transient
    failure falls back to an ordinary, retried listing.
    """

    def __init__(self, store: ObjectStore, prefix: str = "") -> None:
        self.store = store
        self.prefix = normalize_prefix(prefix)
        self._result: list[ObjectInfo] | None = None
        self._error: BaseException | None = None
        self._taken = False
        self._thread = threading.Thread(target=self._run, name="spotshift-early-list", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = list(self.store.list(self.prefix))
        except BaseException as err:  # handed to the caller by take()
            self._error = err

    def take(self, store: ObjectStore, prefix: str) -> list[ObjectInfo] | None:
        """The listing if it is for ``store`` and ``prefix`` and not taken yet; None otherwise."""
        if self._taken or store is not self.store or normalize_prefix(prefix) != self.prefix:
            return None
        self._taken = True
        self._thread.join()
        if isinstance(self._error, TransientStorageError):
            return None
        if self._error is not None:
            raise self._error
        return self._result


def list_objects(store: ObjectStore, prefix: str = "", keep: Callable[[str], bool] = KeyFilter(),
                 retry: RetryPolicy = DEFAULT_RETRY, early: EarlyListing | None = None) -> Listing:
    """List ``store`` under ``prefix`` (retrying transient errors), keyed by relative key."""
    prefix = normalize_prefix(prefix)
    cut = len(prefix)
    listed = early.take(store, prefix) if early is not None else None

    def attempt() -> Listing:
        nonlocal listed
        infos, listed = (listed if listed is not None else store.list(prefix)), None
        objects: dict[str, ObjectInfo] = {}
        ignored = 0
        for info in infos:
            relative = info.key[cut:]
            if not relative or relative.endswith("/"):
                ignored += 1
            elif keep(relative):
                objects[relative] = info
        return Listing(objects, ignored)

    return _retrying(attempt, retry)


def _list_both(source: ObjectStore, source_prefix: str, target: ObjectStore, target_prefix: str,
               keep: KeyFilter, retry: RetryPolicy, early: EarlyListing | None = None) -> tuple[Listing, Listing]:
    """Both listings, in parallel (the source's error wins if both fail; Ctrl-C wins over both)."""
    outcome: dict[str, Any] = {}

    def list_source() -> None:
        try:
            outcome["listing"] = list_objects(source, source_prefix, keep, retry, early)
        except BaseException as err:  # handed to the caller below
            outcome["error"] = err

    # A daemon thread, not a pool: an interrupted run must not wait for a long listing to end.
    thread = threading.Thread(target=list_source, name="spotshift-list", daemon=True)
    thread.start()
    try:
        target_listing = list_objects(target, target_prefix, keep, retry, early)
    except KeyboardInterrupt:
        raise
    except BaseException:
        thread.join()
        if "error" in outcome:
            raise outcome["error"] from None
        raise
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["listing"], target_listing


# -- plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyItem:
    """One object to copy and why."""

    source: ObjectInfo
    target_key: str
    reason: str


@dataclass
class Plan:
    """What ``sync`` will do: copies, deletes, and what is already in place."""

    source_url: str
    target_url: str
    source_prefix: str
    target_prefix: str
    copies: list[CopyItem] = field(default_factory=list)
    deletes: list[ObjectInfo] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    bytes_unchanged: int = 0
    source_objects: dict[str, ObjectInfo] = field(default_factory=dict)
    target_objects: dict[str, ObjectInfo] = field(default_factory=dict)
    ignored: int = 0

    @property
    def bytes_to_copy(self) -> int:
        """Sum of the sizes of the objects to copy."""
        return sum(item.source.size for item in self.copies)

    def reasons(self) -> dict[str, int]:
        """How many copies each reason accounts for (reasons without their numbers)."""
        counts: dict[str, int] = {}
        for item in self.copies:
            label = item.reason.split(" (")[0]
            counts[label] = counts.get(label, 0) + 1
        return counts


def plan(
    source: ObjectStore,
    target: ObjectStore,
    *,
    source_prefix: str = "",
    target_prefix: str = "",
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    delete: bool = False,
    retry: RetryPolicy = DEFAULT_RETRY,
    early: EarlyListing | None = None,
) -> Plan:
    """List both sides and decide, from listings alone, what to copy (and delete when ``delete``)."""
    source_prefix, target_prefix = normalize_prefix(source_prefix), normalize_prefix(target_prefix)
    keep = KeyFilter.of(include, exclude)
    source_listing, target_listing = _list_both(source, source_prefix, target, target_prefix, keep, retry, early)
    result = Plan(
        source_url=location_url(source, source_prefix),
        target_url=location_url(target, target_prefix),
        source_prefix=source_prefix,
        target_prefix=target_prefix,
        source_objects=source_listing.objects,
        target_objects=target_listing.objects,
        ignored=source_listing.ignored,
    )
    for relative, info in source_listing.objects.items():
        reason = compare(info, target_listing.objects.get(relative))
        if reason is None:
            result.unchanged.append(relative)
            result.bytes_unchanged += info.size
        else:
            result.copies.append(CopyItem(info, target_prefix + relative, reason))
    if delete:
        result.deletes = [info for relative, info in target_listing.objects.items()
                          if relative not in source_listing.objects]
    return result


# -- copy ---------------------------------------------------------------------------


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


_END = object()


class _Aborted(Exception):
    """Raised in workers once the run has been stopped by a configuration error."""


def _counted(chunks: Iterator[bytes], progress: Progress) -> Iterator[bytes]:
    for chunk in chunks:
        progress.advance(nbytes=len(chunk))
        yield chunk


class _Engine:
    """The shared state of one run's worker threads."""

    def __init__(self, source: ObjectStore, target: ObjectStore, *, workers: int, retry: RetryPolicy,
                 progress: Progress | None, max_inflight_bytes: int) -> None:
        self.source = source
        self.target = target
        self.workers = max(1, int(workers))
        self.retry = retry
        self.progress = progress
        self.budget = _ByteBudget(max_inflight_bytes)
        self.abort: StorageConfigError | None = None

    def run(self, tasks: Sequence[T], work: Callable[[T], None]) -> None:
        """Run ``work`` over ``tasks`` on ``workers`` threads; stop early on a configuration error and raise it.

        Plain threads pulling from one shared iterator rather than an
        executor: no Future per object, which is measurable client CPU at
        thousands of small objects per run.
        """
        if not tasks:
            return
        pending = iter(tasks)
        take = threading.Lock()
        errors: list[BaseException] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set() and self.abort is None:
                with take:
                    task = next(pending, _END)
                if task is _END:
                    return
                try:
                    self._guarded(work, task)
                except BaseException as err:  # a bug: stop the run and surface it
                    errors.append(err)
                    stop.set()

        threads = [threading.Thread(target=loop, name=f"spotshift-{i}", daemon=True)
                   for i in range(min(self.workers, len(tasks)))]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.25)  # short joins keep Ctrl-C responsive
        except BaseException:
            # Ctrl-C: start nothing new; a cut-off upload commits nothing.
            stop.set()
            raise
        if errors:
            raise errors[0]
        if self.abort is not None:
            raise self.abort

    def _guarded(self, work: Callable[[T], None], task: T) -> None:
        if self.abort is not None:
            return
        try:
            work(task)
        except _Aborted:
            pass
        except StorageConfigError as err:
            if self.abort is None:
                self.abort = err

    def copy(self, item: CopyItem) -> tuple[ObjectInfo, ObjectInfo]:
        """Copy one object with retries; return the source info it copied (fresher than the plan's if
        the source changed meanwhile) and the written target's info, or raise the last error."""
        info = item.source
        cost = min(info.size, LARGE_OBJECT_COST)
        self.budget.acquire(cost)
        try:
            for attempt in range(max(1, self.retry.attempts)):
                if self.abort is not None:
                    raise _Aborted()
                try:
                    return info, self._copy_once(info, item.target_key)
                except TransientStorageError:
                    if attempt >= self.retry.attempts - 1:
                        raise
                except IntegrityError:
                    if attempt >= self.retry.attempts - 1:
                        raise
                    # The source may have been rewritten since it was listed:
                    # copy its current state (head raises ObjectNotFound if it is gone).
                    info = _retrying(functools.partial(self.source.head, info.key), self.retry)
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


def _failure_reason(err: BaseException) -> str:
    if isinstance(err, ObjectNotFound):
        return f"source object disappeared during the copy ({err})"
    if isinstance(err, IntegrityError):
        return f"checksum mismatch, nothing written: {err}"
    if isinstance(err, TransientStorageError):
        return f"gave up after retries: {err}"
    if isinstance(err, (StorageError, ValueError)):
        return str(err)
    return f"{type(err).__name__}: {err}"


def sync(
    source: ObjectStore,
    target: ObjectStore,
    *,
    source_prefix: str = "",
    target_prefix: str = "",
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    delete: bool = False,
    max_delete: int | None = None,
    dry_run: bool = False,
    workers: int = DEFAULT_WORKERS,
    strict: bool = False,
    progress: Progress | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
    on_plan: Callable[[Plan], None] | None = None,
    early: EarlyListing | None = None,
) -> SyncReport:
    """Make the target hold a verified copy of every source object; return what happened.

    Args:
        source, target: the two stores (any backends); not closed here.
        source_prefix, target_prefix: folders mapped onto each other
            (``a/b`` under the source prefix lands at target prefix + ``a/b``).
        include, exclude: ``fnmatch`` globs on the key relative to the prefix
            (``*`` also matches ``/``); with includes, only matching keys count.
        delete: also remove target objects (under the prefix, passing the
            filters) that the source does not have, after copying.
        max_delete: refuse (``DeleteLimitExceeded``, nothing written) when
            more than this many deletions are planned; None means
            ``DEFAULT_MAX_DELETE``. Not enforced by a dry run.
        dry_run: plan only; nothing is written.
        workers: parallel copies.
        strict: verify deeply after copying (re-read every target object's bytes).
        progress: receives progress events (``Progress``), from worker threads.
        retry: backoff for transient errors.
        max_inflight_bytes: memory budget for object bodies in flight.
        on_plan: called with the ``Plan`` once it is made, before any write.
        early: a listing already started for one side (``EarlyListing``).

    Raises:
        StorageConfigError: a side is missing or not accessible (nothing else
            is attempted once it is seen).
        DeleteLimitExceeded: see ``max_delete``.
    """
    started = time.monotonic()
    the_plan = plan(source, target, source_prefix=source_prefix, target_prefix=target_prefix,
                    include=include, exclude=exclude, delete=delete, retry=retry, early=early)
    limit = DEFAULT_MAX_DELETE if max_delete is None else max_delete
    # A dry run shows the deletions even past the limit: that is how one decides to raise it.
    if delete and len(the_plan.deletes) > limit and not dry_run:
        raise DeleteLimitExceeded(
            f"refusing to delete {len(the_plan.deletes)} objects from {the_plan.target_url} "
            f"(more than --max-delete {limit}); nothing was copied or deleted. Check the locations and "
            f"filters, then raise --max-delete to at least {len(the_plan.deletes)} if this is intended"
        )
    if on_plan is not None:
        on_plan(the_plan)
    report = SyncReport(
        source=the_plan.source_url,
        target=the_plan.target_url,
        dry_run=dry_run,
        objects_source=len(the_plan.source_objects),
        objects_target=len(the_plan.target_objects),
        objects_planned=len(the_plan.copies),
        bytes_planned=the_plan.bytes_to_copy,
        objects_skipped=len(the_plan.unchanged),
        bytes_skipped=the_plan.bytes_unchanged,
        objects_to_delete=len(the_plan.deletes),
        objects_ignored=the_plan.ignored,
        reasons=the_plan.reasons(),
        deep=strict,
    )
    if dry_run:
        report.verified = not the_plan.copies
        report.planned_copies = sorted(
            (Problem(_relative(i.target_key, the_plan.target_prefix), i.reason) for i in the_plan.copies),
            key=lambda p: p.key,
        )
        report.planned_deletes = sorted(_relative(i.key, the_plan.target_prefix) for i in the_plan.deletes)
        report.duration_seconds = time.monotonic() - started
        return report

    engine = _Engine(source, target, workers=workers, retry=retry, progress=progress,
                     max_inflight_bytes=max_inflight_bytes)
    lock = threading.Lock()
    # What verification compares the target with: the plan's source listing,
    # updated where a copy found the source rewritten since it was listed.
    expected = dict(the_plan.source_objects)
    # The target as the plan listed it, updated with what each put committed.
    landed = dict(the_plan.target_objects)

    def copy_one(item: CopyItem) -> None:
        try:
            copied, written = engine.copy(item)
        except (StorageConfigError, _Aborted):
            raise
        except Exception as err:  # one object's permanent failure must not stop the others
            with lock:
                report.objects_failed += 1
                report.bytes_failed += item.source.size
                report.failures.append(Problem(_relative(item.target_key, the_plan.target_prefix),
                                               _failure_reason(err)))
        else:
            with lock:
                report.objects_copied += 1
                report.bytes_copied += copied.size
                relative = _relative(item.target_key, the_plan.target_prefix)
                landed[relative] = written
                if copied is not item.source:
                    expected[relative] = copied
        if progress is not None:
            progress.advance(objects=1)

    def delete_one(info: ObjectInfo) -> None:
        try:
            _retrying(lambda: target.delete(info.key, if_version=info.version, missing_ok=True), retry)
        except StorageConfigError:
            raise
        except Exception as err:
            with lock:
                report.objects_delete_failed += 1
                report.failures.append(Problem(_relative(info.key, the_plan.target_prefix),
                                               f"delete failed: {_failure_reason(err)}"))
        else:
            with lock:
                report.objects_deleted += 1
        if progress is not None:
            progress.advance(objects=1)

    # Largest first, so a big object never starts last and stretches the tail.
    copies = sorted(the_plan.copies, key=lambda item: -item.source.size)
    if progress is not None:
        progress.phase("copy", len(copies), the_plan.bytes_to_copy)
    engine.run(copies, copy_one)
    report.failures.sort(key=lambda p: p.key)
    if the_plan.deletes:
        if progress is not None:
            progress.phase("delete", len(the_plan.deletes), 0)
        engine.run(the_plan.deletes, delete_one)

    if the_plan.copies or strict:
        # Each put verified its bytes against the source's checksums before
        # committing and returned what it committed; strict re-lists the
        # target and re-reads every object instead.
        check = _verify_against(expected, source, target, the_plan.target_prefix,
                                KeyFilter.of(include, exclude), deep=strict, workers=workers,
                                retry=retry, progress=progress, source_url=the_plan.source_url,
                                target_url=the_plan.target_url, target_objects=None if strict else landed)
        report.mismatches = check.mismatches
        report.verified = check.verified
    else:
        report.verified = True  # the plan's own listings showed every object in place
    report.verified = report.verified and not report.failures
    report.duration_seconds = time.monotonic() - started
    return report


def _relative(key: str, prefix: str) -> str:
    return key[len(prefix):] if prefix and key.startswith(prefix) else key


# -- verify -------------------------------------------------------------------------


def _hash_stream(store: ObjectStore, key: str, progress: Progress | None) -> Hasher:
    hasher = Hasher()
    stream = store.stream(key, STREAM_CHUNK)
    try:
        for chunk in stream:
            hasher.update(chunk)
            if progress is not None:
                progress.advance(nbytes=len(chunk))
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return hasher


def _deep_reason(source: ObjectStore, target: ObjectStore, src: ObjectInfo, target_key: str,
                 retry: RetryPolicy, progress: Progress | None) -> str | None:
    """Re-read the target's bytes; compare their checksums with the source's (reading it too if it has none)."""
    try:
        got = _retrying(lambda: _hash_stream(target, target_key, progress), retry)
    except ObjectNotFound:
        return "missing on target"
    if got.size != src.size:
        return f"deep check: target has {got.size} B, source {src.size} B"
    if src.md5:
        return None if got.md5 == src.md5.lower() else "deep check: target bytes differ from the source (MD5)"
    if src.crc32c:
        return None if got.crc32c == src.crc32c.lower() else "deep check: target bytes differ from the source (CRC32C)"
    want = _retrying(lambda: _hash_stream(source, src.key, None), retry)
    return None if (want.md5, want.size) == (got.md5, got.size) else "deep check: target bytes differ from the source"


def _verify_against(
    source_objects: Mapping[str, ObjectInfo],
    source: ObjectStore,
    target: ObjectStore,
    target_prefix: str,
    keep: KeyFilter,
    *,
    deep: bool,
    workers: int,
    retry: RetryPolicy,
    progress: Progress | None,
    source_url: str,
    target_url: str,
    target_objects: Mapping[str, ObjectInfo] | None = None,
) -> VerifyReport:
    started = time.monotonic()
    if target_objects is None:
        target_objects = list_objects(target, target_prefix, keep, retry).objects
    report = VerifyReport(source=source_url, target=target_url, deep=deep)
    report.objects_extra = sum(1 for key in target_objects if key not in source_objects)
    candidates: list[tuple[str, ObjectInfo]] = []
    for relative in sorted(source_objects):
        info = source_objects[relative]
        report.objects_checked += 1
        report.bytes_checked += info.size
        reason = compare(info, target_objects.get(relative))
        if reason is not None:
            if relative not in target_objects:
                report.objects_missing += 1
            report.mismatches.append(Problem(relative, reason))
        elif deep:
            candidates.append((relative, info))
        else:
            report.objects_matched += 1
    if deep and candidates:
        lock = threading.Lock()
        engine = _Engine(source, target, workers=workers, retry=retry, progress=progress,
                         max_inflight_bytes=DEFAULT_MAX_INFLIGHT_BYTES)
        if progress is not None:
            progress.phase("verify", len(candidates), sum(info.size for _, info in candidates))

        def check(task: tuple[str, ObjectInfo]) -> None:
            relative, info = task
            try:
                reason = _deep_reason(source, target, info, target_prefix + relative, retry, progress)
            except StorageConfigError:
                raise
            except Exception as err:
                reason = f"deep check could not read the object: {_failure_reason(err)}"
            with lock:
                if reason is None:
                    report.objects_matched += 1
                else:
                    report.mismatches.append(Problem(relative, reason))
            if progress is not None:
                progress.advance(objects=1)

        engine.run(candidates, check)
        report.mismatches.sort(key=lambda p: p.key)
    report.duration_seconds = time.monotonic() - started
    return report


def verify(
    source: ObjectStore,
    target: ObjectStore,
    *,
    source_prefix: str = "",
    target_prefix: str = "",
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    deep: bool = False,
    workers: int = DEFAULT_WORKERS,
    progress: Progress | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    early: EarlyListing | None = None,
) -> VerifyReport:
    """Check every source object has a verified copy on the target; writes nothing.

    From listings: size, provenance checksums equal to the source's, the
    target's own checksum equal to them, content type and metadata. With
    ``deep``, also re-read each target object's bytes and recompute.
    """
    started = time.monotonic()
    source_prefix, target_prefix = normalize_prefix(source_prefix), normalize_prefix(target_prefix)
    keep = KeyFilter.of(include, exclude)
    source_listing, target_listing = _list_both(source, source_prefix, target, target_prefix, keep, retry, early)
    report = _verify_against(
        source_listing.objects, source, target, target_prefix, keep, deep=deep, workers=workers, retry=retry,
        progress=progress, source_url=location_url(source, source_prefix),
        target_url=location_url(target, target_prefix), target_objects=target_listing.objects,
    )
    report.duration_seconds = time.monotonic() - started
    return report


def manifest_digest(
    store: ObjectStore,
    prefix: str = "",
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    retry: RetryPolicy = DEFAULT_RETRY,
) -> str:
    """SHA-256 (hex) over the sorted ``relative key, size, content id`` of every object under ``prefix``.

    A source and a target holding the same content under their prefixes have
    the same digest (copies are identified by their source's checksum kind);
    a missing, extra or altered object changes it.
    """
    listing = list_objects(store, prefix, KeyFilter.of(include, exclude), retry)
    digest = hashlib.sha256()
    for relative in sorted(listing.objects):
        info = listing.objects[relative]
        digest.update(f"{relative}\0{info.size}\0{content_id(info)}\n".encode())
    return digest.hexdigest()
