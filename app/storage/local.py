"""``LocalStore``: an ObjectStore on a local directory (the embedded default).

Objects are plain files under the root, so results can be opened directly.
Each object has a JSON sidecar under ``.spotshift/meta/`` holding its content
type, checksums, version token and user metadata. Data goes to a temporary
file first (written and fsynced without any lock) and is renamed into place,
after its sidecar is written, while holding an ``flock`` on the key's lock stripe under
``.spotshift/locks/``, which makes conditional writes safe across processes
(the API and workers share one directory in local runs) while writes of
different keys proceed in parallel. ``list`` walks only the directories
under the prefix, in key order, without holding a lock: the sidecar names the
inode it describes, so a listing that meets a write half-way re-reads that
one object under its stripe. A listing reads an object's sidecar only when a
field other than key and size is first read (``_ListedInfo``), and
``list_page`` starts after its token without reading the folders before it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import itertools
import zlib
import json
import os
import stat
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from .base import (
    CHUNK_SIZE,
    Body,
    Hasher,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    Page,
    PreconditionFailed,
    StorageConfigError,
    StorageError,
    iter_body,
    validate_key,
)

_INTERNAL = ".spotshift"
_TEMP_NAMES = itertools.count()
#: Unnamed files (``O_TMPFILE``) are linked into place through ``/proc/self/fd`` (Linux).
_UNNAMED_FILES = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
#: Lock files keys are spread over: writes of keys on different stripes never wait for each other.
LOCK_STRIPES = 64


class LocalStore(ObjectStore):
    """Objects as files under ``root``; conditional writes under a cross-process lock."""

    scheme = "file"

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True, durable: bool = True) -> None:
        # Per-write fsyncs, off inside ``batched()`` (one filesystem sync at its end instead) and in a
        # copy worker process of a batched store (``durable=False``: its parent makes the final sync).
        self._durable = durable
        self._unsynced = False  # a write inside ``batched()`` since its start
        self.root = Path(root).expanduser().resolve()
        self._internal = self.root / _INTERNAL
        self._meta = self._internal / "meta"
        self._tmp = self._internal / "tmp"
        self._locks = self._internal / "locks"
        self._internal_ready = False
        self._unnamed = True  # until the filesystem refuses O_TMPFILE
        self._made: set[str] = set()
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageConfigError(
                f"local store directory {self.root} cannot be used: {err.strerror or err}"
            ) from None

    @property
    def url(self) -> str:
        """``file://`` URL of the root directory."""
        return f"file://{self.root}"

    # -- paths and locking -------------------------------------------------------

    def _path(self, key: str) -> str:
        validate_key(key)
        if key == _INTERNAL or key.startswith(_INTERNAL + "/"):
            raise ValueError(f"invalid object key {key!r}: {_INTERNAL}/ is reserved by LocalStore")
        return f"{self.root}/{key}"  # a str, not a Path: joining Paths was a tenth of a small put

    def _meta_path(self, key: str) -> str:
        return f"{self._meta}/{key}.json"

    def _lock_path(self, key: str) -> str:
        return f"{self._locks}/{zlib.crc32(key.encode('utf-8', 'surrogateescape')) % LOCK_STRIPES:02d}"

    @contextlib.contextmanager
    def _locked(self, key: str, exclusive: bool = True) -> Iterator[None]:
        """Hold ``key``'s lock stripe (shared for readers), across processes."""
        fd = self._take_stripe(key, exclusive)
        try:
            yield
        finally:
            if fd >= 0:
                os.close(fd)  # releases the flock

    def _take_stripe(self, key: str, exclusive: bool = True) -> int:
        """Take ``key``'s lock stripe; the descriptor whose close releases it (-1: no lock to take).

        ``_locked`` without the context manager, for ``put`` (its generator was a
        few per cent of a small put).
        """
        if exclusive:
            self._ensure_internal()  # checks the root exists the first time, and when its lock files are gone
            try:
                fd = os.open(self._lock_path(key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:  # someone removed .spotshift/ since
                self._ensure_internal(force=True)
                fd = os.open(self._lock_path(key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        else:
            # Readers take the lock only if a writer ever made it: a store nobody
            # wrote to (or on a read-only mount) is read without one.
            self._require_root()
            try:
                fd = os.open(self._lock_path(key), os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return -1
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _require_root(self) -> None:
        if not os.path.isdir(self.root):
            raise StorageConfigError(f"local store directory {self.root} does not exist")

    def _ensure_internal(self, force: bool = False) -> None:
        # Made on the first write, not on open: reading (a dry run, verify, a
        # read-only source) leaves the directory exactly as it was.
        if force or not self._internal_ready:
            self._require_root()  # never make a removed root again (mkdir parents=True would)
            for directory in (self._meta, self._tmp, self._locks):
                directory.mkdir(parents=True, exist_ok=True)
            self._internal_ready = True

    def _mkstemp(self, prefix: str) -> tuple[int, str]:
        """A new, empty temporary file under ``.spotshift/tmp/`` (mode 0600, as ``tempfile.mkstemp`` makes)."""
        # A per-process counter, not tempfile's random names (about 10 µs of Python per file,
        # a tenth of a small put); O_EXCL still refuses a name a crashed process left behind.
        for _ in range(1000):
            name = f"{self._tmp}/{prefix}{os.getpid()}-{next(_TEMP_NAMES)}"
            try:
                return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), name
            except FileExistsError:
                continue
            except FileNotFoundError:  # someone removed .spotshift/ (or the root) since
                self._ensure_internal(force=True)
        raise StorageError(f"{self.url}: no free temporary file name under {self._tmp}")

    def _make_parent(self, path: str) -> None:
        """Make ``path``'s folder unless this store saw it made (a folder pruned since is remade by ``_replace``)."""
        parent = path.rpartition("/")[0]  # os.path.dirname, for the store's own paths (a tenth of its cost)
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            if len(self._made) >= 10_000:
                self._made.clear()
            self._made.add(parent)

    @contextlib.contextmanager
    def _os_errors(self, key: str | None = None) -> Iterator[None]:
        """OS failures (disk full, I/O error, permissions) as the interface's errors."""
        try:
            yield
        except PermissionError as err:
            raise StorageConfigError(f"{self.url}: permission denied ({err.filename or key})") from None
        except OSError as err:
            if isinstance(err, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
                raise
            where = f"{self.url}/{key}" if key else self.url
            raise StorageError(f"{where}: {err.strerror or type(err).__name__}") from err

    # -- primitives --------------------------------------------------------------

    def _read_info(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"{self.url}/{key}: not found") from None
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"{self.url}/{key}: not found")
        info = self._info(key, st)
        if info is None:
            info = self._stat_info(key, st)
        return info

    def _sidecar(self, key: str) -> dict | None:
        try:
            fd = os.open(f"{self._meta}/{key}.json", os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            data = os.read(fd, 65536)  # one read: a sidecar is a few hundred bytes
            if len(data) == 65536:
                while chunk := os.read(fd, 65536):
                    data += chunk
        finally:
            os.close(fd)
        try:
            meta = json.loads(data)
        except ValueError:
            return None
        return meta if isinstance(meta, dict) else None

    def _info(self, key: str, st: os.stat_result) -> ObjectInfo | None:
        """Info from the stat and the sidecar; None when the sidecar is missing or names other bytes."""
        meta = self._sidecar(key)
        if meta is None or meta.get("inode", st.st_ino) != st.st_ino:
            return None
        return ObjectInfo(
            key=key,
            size=st.st_size,
            content_type=meta.get("content_type"),
            md5=meta.get("md5"),
            crc32c=meta.get("crc32c"),
            version=meta.get("version"),
            updated=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc),
            metadata=meta.get("metadata") or {},
            content_encoding=meta.get("content_encoding"),
            cache_control=meta.get("cache_control"),
        )

    @staticmethod
    def _stat_info(key: str, st: os.stat_result) -> ObjectInfo:
        # A file dropped in by hand, or one whose sidecar describes other bytes
        # (a write cut short between the two renames): only what stat knows.
        return ObjectInfo(key=key, size=st.st_size, version=f"{st.st_mtime_ns}-{st.st_size}-{st.st_ino}",
                          updated=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc))

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
        """Stream to a temp file, verify, then rename into place under the lock."""
        path = self._path(key)
        with self._os_errors(key):
            return self._put(
                key, path, body, content_type=content_type, metadata=metadata, content_encoding=content_encoding,
                cache_control=cache_control, if_absent=if_absent, if_version=if_version,
                expected_md5=expected_md5, expected_crc32c=expected_crc32c,
            )

    def _put(
        self,
        key: str,
        path: str,
        body: Body,
        *,
        content_type: str | None,
        metadata: dict[str, str] | None,
        content_encoding: str | None,
        cache_control: str | None,
        if_absent: bool,
        if_version: str | None,
        expected_md5: str | None,
        expected_crc32c: str | None,
    ) -> ObjectInfo:
        hasher = Hasher()
        self._ensure_internal()
        fd, tmp_name, folder = self._new_data_file(path)
        try:
            for chunk in iter_body(body):
                hasher.update(chunk)
                _write_all(fd, chunk)
            if self._durable:
                os.fsync(fd)
            else:
                self._unsynced = True
            # Renaming or linking keeps the inode and the mtime: the sidecar names the bytes it describes.
            written = os.fstat(fd)
            if tmp_name:
                os.close(fd)
                fd = -1
            inode = written.st_ino
            hasher.check(key, expected_md5, expected_crc32c)
            lock = self._take_stripe(key)
            try:
                if if_absent or if_version is not None:
                    try:
                        current = self._read_info(key)
                    except ObjectNotFound:
                        current = None
                    if if_absent and current is not None:
                        raise PreconditionFailed(f"{self.url}/{key}: already exists")
                    if if_version is not None and (current is None or current.version != if_version):
                        raise PreconditionFailed(f"{self.url}/{key}: version changed")
                if os.path.isdir(path):
                    raise PreconditionFailed(f"{self.url}/{key}: a prefix of other objects, not an object")
                self._make_parent(path)
                version = str(time.time_ns())
                sidecar = {
                    "content_type": content_type,
                    "metadata": dict(metadata or {}),
                    "md5": hasher.md5,
                    "crc32c": hasher.crc32c,
                    "version": version,
                    "content_encoding": content_encoding,
                    "cache_control": cache_control,
                    "inode": inode,
                }
                # The sidecar lands before the data. A crash in between leaves the
                # old bytes with a sidecar naming another inode, which _read_info
                # ignores: the object then has a stat-based version (a stale
                # conditional write fails) and no checksums (nothing trusts it).
                self._write_sidecar(key, sidecar)
                if tmp_name:
                    _replace(tmp_name, path)
                    tmp_name = ""
                else:
                    folder = self._link_unnamed(fd, folder, path)
                if self._durable:
                    if folder >= 0:
                        os.fsync(folder)
                    else:
                        _fsync_dir(os.path.dirname(path))
                return ObjectInfo(
                    key=key, size=written.st_size, content_type=content_type, md5=sidecar["md5"],
                    crc32c=sidecar["crc32c"], version=version,
                    updated=datetime.fromtimestamp(written.st_mtime_ns / 1e9, tz=timezone.utc),
                    metadata=sidecar["metadata"], content_encoding=content_encoding, cache_control=cache_control,
                )
            finally:
                os.close(lock)  # releases the flock
        finally:
            if fd >= 0:
                os.close(fd)  # an unnamed file not linked yet disappears with its last descriptor
            if folder >= 0:
                os.close(folder)
            if tmp_name:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_name)

    def _new_data_file(self, path: str) -> tuple[int, str, int]:
        """A new file for ``path``'s bytes: ``(fd, "", folder fd)`` unnamed in its folder, else ``(fd, temp name, -1)``.

        An unnamed file (``O_TMPFILE``) is linked into place once written: one
        directory entry made in the object's own folder, where a named temporary
        file under ``.spotshift/tmp/`` costs a create there and a rename across
        folders (two to three times the kernel time here, as two copy processes
        contend for the filesystem's rename lock). A write cut short leaves
        nothing behind. Filesystems without ``O_TMPFILE`` get the named file.
        """
        if _UNNAMED_FILES and self._unnamed:
            parent = path.rpartition("/")[0]
            for _ in range(8):
                try:
                    folder = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except FileNotFoundError:
                    os.makedirs(parent, exist_ok=True)  # the root exists: _ensure_internal checked it
                    continue
                except NotADirectoryError:  # an object holds the folder's name: the named path reports it
                    break
                try:
                    return os.open(".", os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o600, dir_fd=folder), "", folder
                except OSError as err:
                    os.close(folder)
                    if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                        raise
                    self._unnamed = False  # not on this filesystem
                    break
        fd, name = self._mkstemp("put-")
        return fd, name, -1

    def _link_unnamed(self, fd: int, folder: int, path: str) -> int:
        """Give the unnamed file ``fd`` the name ``path``, replacing an object there; returns the folder's fd."""
        name = os.path.basename(path)
        for _ in range(8):
            try:
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=folder, follow_symlinks=True)
                return folder
            except FileExistsError:
                break  # the key holds an object: link under .spotshift/tmp/ and rename over it
            except FileNotFoundError:  # a concurrent delete pruned the folder since it was opened
                os.close(folder)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                folder = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for _ in range(1000):
            temp = f"{self._tmp}/link-{os.getpid()}-{next(_TEMP_NAMES)}"
            try:
                os.link(f"/proc/self/fd/{fd}", temp, dst_dir_fd=folder, follow_symlinks=True)
                break
            except FileExistsError:
                continue
        else:
            raise StorageError(f"{self.url}: no free temporary file name under {self._tmp}")
        try:
            _replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        return folder

    def _write_sidecar(self, key: str, sidecar: dict) -> None:
        """Write ``key``'s sidecar in place (the caller holds the key's stripe).

        No temporary file and rename (they were a fifth of a small put): a
        reader that meets the sidecar half-written finds no valid JSON and
        reads it again under the stripe, after this write; a crash half-way
        leaves a sidecar that parses as nothing, as a missing one.
        """
        meta_path = self._meta_path(key)
        self._make_parent(meta_path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            fd = os.open(meta_path, flags, 0o600)
        except FileNotFoundError:  # a concurrent delete of its folder's last object pruned the folder
            os.makedirs(os.path.dirname(meta_path), exist_ok=True)
            fd = os.open(meta_path, flags, 0o600)
        try:
            _write_all(fd, json.dumps(sidecar).encode())  # dumps: the C encoder (dump writes piece by piece)
            if self._durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if self._durable:
            _fsync_dir(os.path.dirname(meta_path))

    def stream(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the file's bytes in chunks."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # no buffered file object: its fstat and ioctl per open
        except (FileNotFoundError, NotADirectoryError):
            self._require_root()  # a missing root is a configuration error, as in the other calls
            raise ObjectNotFound(f"{self.url}/{key}: not found") from None
        try:
            with self._os_errors(key):
                while chunk := os.read(fd, chunk_size):
                    yield chunk
        except IsADirectoryError:  # the key names a folder of other objects (opening one for reading works)
            raise ObjectNotFound(f"{self.url}/{key}: not found") from None
        finally:
            os.close(fd)

    def head(self, key: str) -> ObjectInfo:
        """Info from the file's stat and its sidecar."""
        with self._os_errors(key), self._locked(key, exclusive=False):
            return self._read_info(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walk only the directories under ``prefix`` (skipping ``.spotshift/``), yielding infos in key order.

        Memory is one directory's entries per level of the path, not the tree.
        Each info's sidecar fields are read when first asked for (see ``_ListedInfo``).
        """
        self._require_root()
        with self._os_errors():
            yield from self._walk_prefix(prefix, None)

    def list_scanned(self, prefix: str, scanner: "FolderScanner") -> Iterator[ObjectInfo]:
        """``list(prefix)``, with each folder scanned by ``scanner`` (which may scan ahead, elsewhere).

        The walk asks ``scanner.scan`` for each folder in key order and tells
        ``scanner.ahead`` the sub-folders of each one it scanned, in the order it
        will ask for them. The infos are those ``list`` gives.
        """
        self._require_root()
        with self._os_errors():
            yield from self._walk_scanned(*self._prefix_folder(prefix), scanner)

    def _walk_scanned(self, directory: str, key_prefix: str, start: str,
                      scanner: "FolderScanner") -> Iterator[ObjectInfo]:
        entries = scanner.scan(directory, start, not key_prefix)
        folders = [f"{directory}/{name[:-1]}" for name, _, _, _ in entries if name[-1] == "/"]
        if folders:
            scanner.ahead(folders)
        listed = _ListedInfo.new
        for name, size, ino, mtime_ns in entries:
            if name[-1] == "/":
                yield from self._walk_scanned(f"{directory}/{name[:-1]}", key_prefix + name, "", scanner)
            else:
                yield listed(self, key_prefix + name, size, ino, mtime_ns)

    def list_page(self, prefix: str, limit: int, token: str | None = None) -> Page:
        """Up to ``limit`` objects under ``prefix`` after the key ``token``; folders wholly before it are not read."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self._require_root()
        items: list[ObjectInfo] = []
        with self._os_errors():
            for info in self._walk_prefix(prefix, token):
                if len(items) == limit:
                    return Page(items, items[-1].key)
                items.append(info)
        return Page(items, None)

    def _walk_prefix(self, prefix: str, after: str | None) -> Iterator[ObjectInfo]:
        return self._walk(*self._prefix_folder(prefix), after)

    def _prefix_folder(self, prefix: str) -> tuple[str, str, str]:
        """Where a listing of ``prefix`` starts: the folder, its keys' prefix, and how its names must start."""
        folder, _, start = prefix.rpartition("/")
        return (f"{self.root}/{folder}" if folder else str(self.root)), (f"{folder}/" if folder else ""), start

    def _walk(self, directory: str, key_prefix: str, start: str, after: str | None) -> Iterator[ObjectInfo]:
        """Keys under ``directory`` whose name starts with ``start``, in key order, skipping keys up to ``after``."""
        sortable = _folder_entries(directory, start, not key_prefix)
        for name, entry in sortable:
            key = key_prefix + name
            if after is not None:
                if name[-1] == "/":
                    if after.startswith(key):
                        yield from self._walk(entry.path, key, "", after)
                        continue
                    if key < after:
                        continue  # every key in this folder sorts before the token
                elif key <= after:
                    continue
                after = None  # past the token: the rest of this folder is wanted
            if name[-1] == "/":
                yield from self._walk(entry.path, key, "", None)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted between the scan and the stat
            if not stat.S_ISREG(st.st_mode):
                continue
            yield _ListedInfo.new(self, key, st.st_size, st.st_ino, st.st_mtime_ns)

    def _fill(self, info: "_ListedInfo") -> None:
        """Read a listed object's sidecar into its info (its stat-only fields if the sidecar names other bytes)."""
        key, ino = info.key, info._ino
        meta = self._sidecar(key)
        if meta is None or meta.get("inode", ino) != ino:
            # A write half-way (sidecar and data renamed one after the other), or no
            # sidecar at all: read it again under the key's stripe, as head does.
            with self._locked(key, exclusive=False):
                meta = self._sidecar(key)
            if meta is not None and meta.get("inode", ino) != ino:
                meta = None  # the key holds other bytes now: say only what the listed stat knows
        put = object.__setattr__
        put(info, "updated", datetime.fromtimestamp(info._mtime_ns / 1e9, tz=timezone.utc))
        if meta is None:
            for name in ("content_type", "md5", "crc32c", "content_encoding", "cache_control"):
                put(info, name, None)
            put(info, "version", f"{info._mtime_ns}-{info.size}-{ino}")
            put(info, "metadata", {})
            return
        put(info, "content_type", meta.get("content_type"))
        put(info, "md5", meta.get("md5"))
        put(info, "crc32c", meta.get("crc32c"))
        put(info, "version", meta.get("version"))
        put(info, "metadata", meta.get("metadata") or {})
        put(info, "content_encoding", meta.get("content_encoding"))
        put(info, "cache_control", meta.get("cache_control"))

    def delete(self, key: str, *, if_version: str | None = None, missing_ok: bool = True) -> None:
        """Remove the file and its sidecar, then any directories left empty."""
        path = self._path(key)
        with self._os_errors(key), self._locked(key):
            try:
                current = self._read_info(key)
            except ObjectNotFound:
                if missing_ok and if_version is None:
                    return
                if if_version is not None:
                    raise PreconditionFailed(f"{self.url}/{key}: version changed") from None
                raise
            if if_version is not None and current.version != if_version:
                raise PreconditionFailed(f"{self.url}/{key}: version changed")
            os.unlink(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._meta_path(key))
            self._prune(Path(path).parent, self.root)
            self._prune(Path(self._meta_path(key)).parent, self._meta)

    @staticmethod
    def _prune(directory: Path, stop: Path) -> None:
        while directory != stop and stop in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    @contextlib.contextmanager
    def batched(self) -> Iterator["LocalStore"]:
        """Writes inside skip their own fsyncs; one filesystem sync at the end makes them all durable.

        For bulk copies (``spotshift migrate`` into ``file://``): an fsync costs
        milliseconds here, the rest of a small put tens of microseconds. A crash
        before the end can leave the last objects short or empty on disk, which
        the next run sees (size differs) and copies again. A batch that wrote
        nothing (a dry run, a no-op) does not sync.
        """
        durable, self._durable = self._durable, False
        self._unsynced = False
        try:
            yield self
        finally:
            self._durable = durable
            if self._unsynced:
                os.sync()

    @staticmethod
    def listing_stat(info: ObjectInfo) -> tuple[int, int] | None:
        """(inode, mtime in ns) that a listing of a local store saw for ``info``; None for any other info."""
        return (info._ino, info._mtime_ns) if isinstance(info, _ListedInfo) else None

    def listed(self, key: str, size: int, listing_stat: tuple[int, int]) -> ObjectInfo:
        """The info ``list`` gave for ``key`` (from ``listing_stat``), its sidecar read when first needed.

        For a copy worker process handed listed objects: it reads what a head
        would, without the stat and the lock a head takes.
        """
        validate_key(key)
        return _ListedInfo.new(self, key, size, *listing_stat)

    @property
    def durable(self) -> bool:
        """Whether each write is fsynced before it returns (not inside ``batched()``)."""
        return self._durable

    def written_elsewhere(self) -> None:
        """Other processes wrote into this directory for this store (copy workers): ``batched()`` syncs at its end."""
        self._unsynced = True

    def ping(self) -> None:
        """The root (and the store's own directories, once made) must exist and be writable."""
        self._require_root()
        for directory in (self.root, self._meta, self._tmp, self._locks):
            if directory.exists() and not os.access(directory, os.W_OK):
                raise StorageConfigError(f"local store directory {directory} is not writable")


#: One entry of ``scan_folder``: (name, size, inode, mtime in ns); a folder's name ends in "/" (and the rest is 0).
ScannedEntry = tuple[str, int, int, int]


def _folder_entries(directory: str, start: str, top: bool) -> "list[tuple[str, os.DirEntry[str]]]":
    """The entries of ``directory`` whose name starts with ``start``, in key order; a folder's name ends in "/".

    Key order, not name order: a directory "a" sorts as "a/", so "a-b" and
    "a.b" (0x2d, 0x2e) come before "a/x" (0x2f) and "a0" after it. ``top``:
    ``directory`` is the store's root, whose ``.spotshift/`` is not listed.
    A directory that is gone (removed meanwhile) has no entries.
    """
    try:
        with os.scandir(directory) as it:
            entries = [e for e in it if e.name.startswith(start)] if start else list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []
    sortable = []
    for entry in entries:
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            continue
        if is_dir:
            if top and entry.name == _INTERNAL:
                continue
            sortable.append((entry.name + "/", entry))
        else:
            sortable.append((entry.name, entry))
    sortable.sort(key=lambda pair: pair[0])
    return sortable


def scan_folder(directory: str, start: str = "", top: bool = False) -> list[ScannedEntry]:
    """One folder of a listing, stat-ed: its folders and regular files, in key order (see ``_folder_entries``).

    Plain tuples, so another process can scan a folder for ``LocalStore.list_scanned``.
    """
    scanned: list[ScannedEntry] = []
    for name, entry in _folder_entries(directory, start, top):
        if name[-1] == "/":
            scanned.append((name, 0, 0, 0))
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # deleted between the scan and the stat
        if stat.S_ISREG(st.st_mode):
            scanned.append((name, st.st_size, st.st_ino, st.st_mtime_ns))
    return scanned


class FolderScanner(Protocol):
    """Scans folders for ``LocalStore.list_scanned``."""

    def scan(self, directory: str, start: str, top: bool) -> list[ScannedEntry]:
        """``scan_folder(directory, start, top)``, or what it gave when scanned ahead."""

    def ahead(self, directories: list[str]) -> None:
        """These folders, in this order, are the next the walk will ask for (before any it was told of earlier)."""


class _ListedInfo(ObjectInfo):
    """A listed object: key and size from the walk, the other fields read from its sidecar when first asked for.

    Most decisions need no more than key and size (a dry run into an empty
    target, a copy of a missing object): reading and parsing a sidecar is
    most of a listing's cost, so it happens only for the objects that need it.
    """

    __slots__ = ("_store", "_ino", "_mtime_ns")
    _store: LocalStore
    _ino: int
    _mtime_ns: int

    @staticmethod
    def new(store: LocalStore, key: str, size: int, ino: int, mtime_ns: int) -> "_ListedInfo":
        """An info holding only what the walk's stat knows; the rest comes on first read."""
        info = _ListedInfo.__new__(_ListedInfo)
        put = object.__setattr__
        put(info, "key", key)
        put(info, "size", size)
        put(info, "_store", store)
        put(info, "_ino", ino)
        put(info, "_mtime_ns", mtime_ns)
        return info

    def __getattr__(self, name: str) -> object:
        # Python calls this only for a slot not filled yet: a sidecar field.
        if name.startswith("_"):
            raise AttributeError(name)
        self._store._fill(self)
        return object.__getattribute__(self, name)

    def __eq__(self, other: object) -> bool:
        # The dataclass's own __eq__ compares only instances of one class: a listed info equals its head.
        if not isinstance(other, ObjectInfo):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _FIELDS)

    __hash__ = ObjectInfo.__hash__

    def __repr__(self) -> str:
        return "ObjectInfo(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS) + ")"


_FIELDS = tuple(field.name for field in dataclasses.fields(ObjectInfo))


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _replace(src: str, dst: str) -> None:
    """``os.replace``, making ``dst``'s folder again if a concurrent delete of its last object pruned it."""
    for _ in range(8):
        try:
            os.replace(src, dst)
            return
        except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a file took the folder's name
            if not os.path.exists(src):
                raise
            os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.replace(src, dst)


def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
