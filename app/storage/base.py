"""The one storage interface: everything in spotshift talks to an ``ObjectStore``.

Backends implement a handful of primitives (put, stream, head, list, delete,
ping) and translate their SDK's errors into the errors below, so callers never
import a cloud SDK. Helpers built on the primitives (``get``, ``exists``,
``put_json``...) are written once, here.

Conventions every backend follows:

* keys are ``/``-separated strings relative to the store (no leading ``/``);
* checksums are lowercase hex: ``md5`` is 32 hex chars, ``crc32c`` is 8 hex
  chars (big-endian, as GCS and Azure define CRC32C);
* ``version`` is an opaque token (GCS generation, Azure ETag, local
  nanosecond stamp) accepted back by ``if_version`` for compare-and-swap;
* ``metadata`` is user metadata: ``str -> str``, keys lowercase ASCII
  identifiers (``[a-z0-9_]``) so they survive every backend's rules.
"""

from __future__ import annotations

import abc
import hashlib
import itertools
import json
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, Generic, TypeVar, Union

import google_crc32c

#: Default chunk size for streaming reads and writes (4 MiB).
CHUNK_SIZE = 4 * 1024 * 1024

#: What ``put`` accepts as a body: whole bytes, a readable binary file, or an
#: iterable of byte chunks (e.g. another store's ``stream``).
Body = Union[bytes, bytearray, memoryview, BinaryIO, Iterable[bytes]]

T = TypeVar("T")


class StorageError(Exception):
    """Base class of every error an ``ObjectStore`` raises."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """The key does not exist (a missing bucket/container is a ``StorageConfigError``)."""


class PreconditionFailed(StorageError):
    """A conditional write lost: the object exists (``if_absent``) or changed (``if_version``)."""


class TransientStorageError(StorageError):
    """A retryable failure: throttling, 5xx, timeout, connection reset."""


class StorageConfigError(StorageError):
    """The store cannot be used as configured: missing bucket, no credentials, bad setting."""


class IntegrityError(StorageError):
    """Bytes written or read do not match the expected checksum; nothing was committed."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one object, from a head or a listing."""

    # slots: a listing of a million objects builds a million of these (no per-instance dict),
    # and a backend may subclass it to fill some fields only when first read (LocalStore's listing).

    key: str
    size: int
    content_type: str | None = None
    md5: str | None = None
    crc32c: str | None = None
    version: str | None = None
    updated: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    content_encoding: str | None = None
    cache_control: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of a listing: its objects in key order and the token of the next page (None at the end)."""

    items: list[ObjectInfo]
    token: str | None = None


class Hasher:
    """MD5 and CRC32C over a byte stream, fed chunk by chunk."""

    def __init__(self, *, md5: bool = True) -> None:
        # md5=False where the service checks a Content-MD5 itself: MD5 costs about
        # 2 ms of CPU per MiB here, CRC32C (hardware-accelerated) a fortieth of that.
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self._crc = google_crc32c.Checksum()
        self.size = 0

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Add a chunk to the digests."""
        if self._md5 is not None:
            self._md5.update(chunk)
        self._crc.update(bytes(chunk) if not isinstance(chunk, bytes) else chunk)
        self.size += len(chunk)

    @property
    def md5(self) -> str:
        """MD5 of everything fed so far, lowercase hex."""
        if self._md5 is None:
            raise RuntimeError("this Hasher was made with md5=False")
        return self._md5.hexdigest()

    @property
    def crc32c(self) -> str:
        """CRC32C of everything fed so far, 8 lowercase hex chars."""
        return self._crc.digest().hex()

    def check(self, key: str, expected_md5: str | None, expected_crc32c: str | None) -> None:
        """Raise ``IntegrityError`` if either expected checksum is given and differs (MD5 only if computed)."""
        if expected_md5 and self._md5 is not None and expected_md5.lower() != self.md5:
            raise IntegrityError(f"{key}: MD5 mismatch (expected {expected_md5}, got {self.md5})")
        if expected_crc32c and expected_crc32c.lower() != self.crc32c:
            raise IntegrityError(
                f"{key}: CRC32C mismatch (expected {expected_crc32c}, got {self.crc32c})"
            )


class ReadAhead(Generic[T]):
    """``items`` read in a thread of its own, started now, at most about ``limit`` items ahead of the consumer.

    A listing waits on its service: read ahead, its round trips overlap the
    consumer's work (or another listing's) instead of taking turns with it.
    Items cross to the consumer in batches (one queue operation per
    ``batch``), in order; an error of ``items`` is raised to the consumer
    after the items before it. ``close()``, or leaving the iteration, stops
    the thread at its next hand-over and closes ``items``.
    """

    def __init__(self, items: Iterable[T], *, limit: int, batch: int, name: str = "spotshift-read-ahead") -> None:
        self._items = items
        self._batch = max(1, batch)
        self._queue: queue.Queue[Any] = queue.Queue(max(1, limit // self._batch))
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        batch: list[T] = []
        iterator = iter(self._items)  # in this thread: a lazy ``items`` starts its work here
        try:
            for item in iterator:
                batch.append(item)
                if len(batch) >= self._batch:
                    if not self._offer(batch):
                        return
                    batch = []
        except BaseException as err:  # handed to the consumer, after what was read before it
            if not batch or self._offer(batch):
                self._offer(_Failed(err))
            return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        if not batch or self._offer(batch):
            self._offer(_END)

    def _offer(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.25)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> list[T] | None:
        """The next batch (waits for it); None once ``items`` is exhausted; raises the error of ``items``."""
        if self._done:
            return None
        got = self._queue.get()
        if got is _END:
            self._done = True
            return None
        if isinstance(got, _Failed):
            self._done = True
            raise got.error
        return got  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[T]:
        try:
            while (batch := self.get()) is not None:
                yield from batch
        finally:
            self.close()

    def close(self) -> None:
        """Stop reading ahead; the thread ends at its next hand-over (or at once if waiting to hand over)."""
        self._stop.set()


_END = object()

#: Pages a folder listing of ``fan_out`` hands over ahead of the consumer; it reads one more, then waits
#: between requests (never holding a half-read response, which the service could close meanwhile).
FOLDER_PAGES_AHEAD = 1
#: Entries of a level ``fan_out`` reads ahead of the consumer to reach the next folders (an Azure page).
LEVEL_AHEAD = 5000
#: A level whose first page names more folders than this is listed flat: a request per folder could
#: cost far more than the flat pages (a folder per user, a few keys each).
FANOUT_MAX_FOLDERS = 100


def fan_out(level: Iterator[ObjectInfo | str], folder_pages: Callable[[str], Iterable[list[ObjectInfo]]], *,
            ahead: int, name: str = "spotshift-folder") -> Iterator[ObjectInfo]:
    """A level of a listing with each folder replaced by that folder's own listing, read ahead in threads.

    ``level`` yields a level's objects and folder names (``str``, ending in
    the delimiter) in listing order; ``folder_pages(folder)`` lists a folder
    page by page. Up to ``ahead`` folder listings run at once ahead of the
    consumer, each handing over whole pages (``FOLDER_PAGES_AHEAD``, one more
    in hand). A failure of the level or of a folder's listing is raised
    where its entries would have come; leaving the iteration stops every
    folder thread.
    """
    # The level's entries not yet yielded: infos, folder listings already started, or the
    # level listing's error (raised where the entries after it would have come).
    window: deque[ObjectInfo | ReadAhead[list[ObjectInfo]] | Exception] = deque()
    started = 0  # folder listings in the window
    exhausted = False

    def fill() -> None:
        nonlocal started, exhausted
        while not exhausted and started < ahead and len(window) < LEVEL_AHEAD:
            try:
                entry = next(level)
            except StopIteration:
                exhausted = True
                return
            except Exception as err:  # noqa: BLE001 - handed to the consumer in its place
                window.append(err)
                exhausted = True
                return
            if isinstance(entry, str):
                window.append(ReadAhead(folder_pages(entry), limit=FOLDER_PAGES_AHEAD, batch=1, name=name))
                started += 1
            else:
                window.append(entry)

    try:
        fill()
        while window:
            entry = window.popleft()
            if isinstance(entry, ReadAhead):
                started -= 1
                fill()  # the next folder starts before this one is drained
                for page in entry:
                    yield from page
            elif isinstance(entry, Exception):
                raise entry
            else:
                yield entry
                fill()
    finally:
        for entry in window:
            if isinstance(entry, ReadAhead):
                entry.close()


def by_folders(level_pages: Iterator[list[ObjectInfo | str]], named: Callable[[list[ObjectInfo | str]], int],
               folder_pages: Callable[[str], Iterable[list[ObjectInfo]]], prefix: str, *, ahead: int,
               max_folders: int, name: str) -> Iterator[ObjectInfo]:
    """A level's listing (pages of objects and folder names) through ``fan_out``, or flat if it has many folders.

    ``named(first_page)`` says how many folders the level had named by the
    end of its first page; past ``max_folders`` (a folder per user, a few keys
    each: a request per folder would cost far more) the level is listed flat
    with ``folder_pages(prefix)``, one request more.
    """
    try:
        first = next(level_pages, [])
        if named(first) > max_folders:
            level_pages.close()
            for page in folder_pages(prefix):
                yield from page
            return
        yield from fan_out(itertools.chain(first, itertools.chain.from_iterable(level_pages)), folder_pages,
                           ahead=ahead, name=name)
    finally:
        level_pages.close()


@dataclass
class _Failed:
    error: BaseException


def iter_body(body: Body, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield a ``Body`` as chunks of bytes, whatever form it came in."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        view = memoryview(body)
        if len(view) == 0:
            return
        for start in range(0, len(view), chunk_size):
            yield bytes(view[start : start + chunk_size])
        return
    read = getattr(body, "read", None)
    if callable(read):
        while True:
            chunk = read(chunk_size)
            if not chunk:
                return
            yield chunk
        return
    for chunk in body:  # type: ignore[union-attr]
        if chunk:
            yield chunk


def validate_key(key: str) -> str:
    """Reject keys no backend can hold the same way; return the key unchanged."""
    if not key or key[0] == "/" or key[-1] == "/":
        raise ValueError(f"invalid object key {key!r}: must be non-empty, no leading or trailing '/'")
    # The segments checked without splitting the key (this runs on every request and copy):
    # a "." or ".." segment is the whole key, its start, its end or between two slashes.
    if "//" in key or ("." in key and (key in (".", "..") or key.startswith(("./", "../"))
                                       or key.endswith(("/.", "/..")) or "/./" in key or "/../" in key)):
        raise ValueError(f"invalid object key {key!r}: empty, '.' or '..' path segment")
    if "\x00" in key or len(key.encode()) > 1024:
        raise ValueError(f"invalid object key {key!r}: NUL byte or longer than 1024 bytes")
    return key


class ObjectStore(abc.ABC):
    """A bucket-like store of immutable-by-replacement objects."""

    #: Short scheme used in ``url``: ``file``, ``gs`` or ``az``.
    scheme: str = ""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where this store points, for logs and reports (``gs://bucket``); never holds secrets."""

    # -- primitives every backend implements ------------------------------------

    @abc.abstractmethod
    def put(
        self,
        key: str,
        body: Body,
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        content_encoding: str | None = None,
        cache_control: str | None = None,
        if_absent: bool = False,
        if_version: str | None = None,
        expected_md5: str | None = None,
        expected_crc32c: str | None = None,
        size: int | None = None,
    ) -> ObjectInfo:
        """Write an object atomically and return its info.

        Args:
            key: object key.
            body: bytes, a readable binary file, or an iterable of chunks;
                streamed, never held whole in memory by the backend.
            content_type, metadata, content_encoding, cache_control: stored
                with the object.
            if_absent: fail with ``PreconditionFailed`` if the key exists.
            if_version: fail with ``PreconditionFailed`` unless the current
                version token equals this one.
            expected_md5, expected_crc32c: hex checksums the bytes must have;
                on mismatch raise ``IntegrityError`` and leave the previous
                object (or nothing) visible.
            size: the body's length when known, a hint for choosing single
                versus block/resumable upload.
        """

    @abc.abstractmethod
    def stream(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the object's bytes in chunks; ``ObjectNotFound`` if absent.

        The existence check happens on the first ``next()``.
        """

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Return the object's info; ``ObjectNotFound`` if absent."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield info (with metadata and checksums) for every object under ``prefix``, in key order."""

    @abc.abstractmethod
    def delete(self, key: str, *, if_version: str | None = None, missing_ok: bool = True) -> None:
        """Delete an object; ``ObjectNotFound`` only when absent and not ``missing_ok``."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Check the bucket/container is reachable; ``StorageConfigError`` if it does not exist or access is denied."""

    def close(self) -> None:
        """Release clients and pools; the store may not be used afterwards."""

    def list_page(self, prefix: str, limit: int, token: str | None = None) -> Page:
        """Up to ``limit`` objects under ``prefix`` in key order, from a previous page's ``token`` on.

        Backends whose listing takes a page size and a continuation token answer
        with one request whatever the number of objects; this default walks
        ``list`` and uses the last key of a page as the next page's token.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        items: list[ObjectInfo] = []
        for info in self.list(prefix):
            if token is not None and info.key <= token:
                continue
            if len(items) == limit:
                return Page(items, items[-1].key)
            items.append(info)
        return Page(items, None)

    # -- helpers written once on top of the primitives --------------------------

    def get(self, key: str) -> bytes:
        """Return the whole object (for small objects: job documents, images)."""
        return b"".join(self.stream(key))

    def exists(self, key: str) -> bool:
        """True if the key exists."""
        try:
            self.head(key)
        except ObjectNotFound:
            return False
        return True

    def get_json(self, key: str) -> Any:
        """Return the object parsed as JSON."""
        return json.loads(self.get(key))

    def put_json(self, key: str, value: Any, **kwargs: Any) -> ObjectInfo:
        """Write ``value`` as a JSON object; keyword arguments go to ``put``."""
        data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        return self.put(key, data, content_type="application/json", **kwargs)

    def __enter__(self) -> "ObjectStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url})"
