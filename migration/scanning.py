"""A local directory's listing with its folders scanned in worker processes, ahead of the walk.

Listing a local tree is one ``lstat`` per object (about 4 µs of kernel time
on the bench machine) plus the Python around it, all on one core: a
1M-object dry run spent 11.5 s of its 20 s listing. Threads do not help (the
stat is too short to be worth the GIL's hand-over; a two-thread read-ahead
was slower than none). Here worker processes scan and stat whole folders
(``scan_folder``) in the order the walk (``LocalStore.list_scanned``) will
need them, and the walk only turns their tuples into infos.

The scanner starts no process until the walk has met ``POOL_FOLDERS``
folders: a small tree is scanned in the walk's own thread, as ``list`` does.
What is scanned ahead is bounded (``AHEAD_FOLDERS`` folders, ``AHEAD_ENTRIES``
entries), so memory does not grow with the tree. A worker pool that breaks
(a worker killed) leaves the rest of the walk to the walk's own thread.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool

from app.storage.base import ObjectInfo
from app.storage.local import LocalStore, ScannedEntry, scan_folder

from .processes import serve

#: Folders the walk must have met before worker processes start (each costs ~0.1 s to spawn).
POOL_FOLDERS = 16
#: Folder scans running at once, per worker process: one queued behind each running one.
RUNNING_PER_PROCESS = 2
#: At most this many folders scanned (or being scanned) ahead of the walk ...
AHEAD_FOLDERS = 64
#: ... holding at most about this many entries between them (a folder's scan is never cut short).
AHEAD_ENTRIES = 50_000


class ProcessScanner:
    """A ``FolderScanner`` that scans the next folders of a walk in ``processes`` worker processes."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._met = 0
        # Folders the walk will ask for next, in its order, not handed out yet.
        self._upcoming: deque[str] = deque()
        # Folders handed out and not yet asked for, by directory.
        self._ahead: dict[str, concurrent.futures.Future[list[ScannedEntry]]] = {}

    def scan(self, directory: str, start: str, top: bool) -> list[ScannedEntry]:
        future = self._ahead.pop(directory, None)
        if future is None:
            if self._upcoming and self._upcoming[0] == directory:
                self._upcoming.popleft()
            entries = scan_folder(directory, start, top)
        else:
            try:
                entries = future.result()
            except BrokenProcessPool:  # a worker died (killed): the walk scans the rest itself
                self._broken()
                entries = scan_folder(directory, start, top)
        self._hand_out()
        return entries

    def ahead(self, directories: list[str]) -> None:
        self._upcoming.extendleft(reversed(directories))
        self._met += len(directories)
        if self._executor is None and self._met >= POOL_FOLDERS and self.processes > 1:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn"), initializer=serve,
                initargs=(os.getpid(),))
        self._hand_out()

    def _hand_out(self) -> None:
        executor = self._executor
        if executor is None:
            return
        running = held = 0
        for future in self._ahead.values():
            if not future.done():
                running += 1
            elif not future.cancelled() and future.exception() is None:
                held += len(future.result())
        while (self._upcoming and running < RUNNING_PER_PROCESS * self.processes
               and len(self._ahead) < AHEAD_FOLDERS and held < AHEAD_ENTRIES):
            directory = self._upcoming.popleft()
            try:
                self._ahead[directory] = executor.submit(scan_folder, directory)
            except BrokenProcessPool:
                self._broken()
                return
            running += 1

    def _broken(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self.processes = 1  # no new pool
        self._ahead.clear()

    def close(self) -> None:
        """Stop the worker processes (scans under way finish first: a folder each)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def scanned_listing(store: LocalStore, prefix: str, processes: int) -> Iterator[ObjectInfo]:
    """``store.list(prefix)``, its folders scanned ahead in up to ``processes`` worker processes."""
    scanner = ProcessScanner(processes)
    try:
        yield from store.list_scanned(prefix, scanner)
    finally:
        scanner.close()
