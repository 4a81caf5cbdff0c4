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
Folders go out in batches of about ``BATCH_ENTRIES`` entries (by
the folders scanned so far), so tiny folders do not each pay a hand-over.
What is scanned ahead is bounded (``AHEAD_FOLDERS`` folders, ``AHEAD_ENTRIES``
entries), so memory does not grow with the tree. A worker pool that breaks
(a worker killed) leaves the rest of the walk to the walk's own thread.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool

from app.storage.base import ObjectInfo
from app.storage.local import LocalStore, ScannedEntry, scan_folder

from .processes import spawn_context, serve

#: Folders the walk must have met before worker processes start (each costs ~0.1 s to spawn).
POOL_FOLDERS = 16
#: Batches of folder scans running at once, per worker process: one queued behind each running one.
RUNNING_PER_PROCESS = 2
#: A batch holds folders of about this many entries between them (by the folders scanned so far), so
#: a tree of tiny folders (``jobs/<id>/status.json``) does not pay a hand-over per folder ...
BATCH_ENTRIES = 1000
#: ... and at most this many folders; before any folder below the first was scanned, this many.
BATCH_FOLDERS = 256
FIRST_BATCH_FOLDERS = 4
#: At most this many folders scanned (or being scanned) ahead of the walk ...
AHEAD_FOLDERS = 4096
#: ... and those scanned holding at most about this many entries between them (a folder is never cut short).
AHEAD_ENTRIES = 50_000

_Batch = concurrent.futures.Future  # of list[list[ScannedEntry]]: one list per folder of the batch


def scan_folders(directories: list[str]) -> list[list[ScannedEntry]]:
    """``scan_folder`` of each folder (a worker process's task)."""
    return [scan_folder(directory) for directory in directories]


class ProcessScanner:
    """A ``FolderScanner`` that scans the next folders of a walk in ``processes`` worker processes."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._met = 0
        self._walked = False
        self._scanned_folders = self._scanned_entries = 0
        # Folders the walk will ask for next, in its order, not handed out yet.
        self._upcoming: deque[str] = deque()
        # Folders handed out and not yet asked for: their batch and their place in it; and how many
        # folders of each batch handed out are still to be asked for.
        self._ahead: dict[str, tuple[_Batch, int]] = {}
        self._batches: dict[_Batch, int] = {}

    def scan(self, directory: str, start: str, top: bool) -> list[ScannedEntry]:
        """The folder's entries: from its batch when it was handed out, else scanned here."""
        handed = self._ahead.pop(directory, None)
        if handed is None:
            if self._upcoming and self._upcoming[0] == directory:
                self._upcoming.popleft()
            entries = scan_folder(directory, start, top)
            more = True
        else:
            batch, place = handed
            try:
                entries = batch.result()[place]
            except BrokenProcessPool:  # a worker died (killed): the walk scans the rest itself
                self._broken()
                entries = scan_folder(directory, start, top)
            left = self._batches.pop(batch, 1) - 1
            if left:
                self._batches[batch] = left
            more = not left  # a batch taken whole: hand out the next
        if self._walked:  # the walk's first folder (the root or the prefix's) is no guide to those below it
            self._scanned_folders += 1
            self._scanned_entries += len(entries)
        self._walked = True
        if more:
            self._hand_out()
        return entries

    def ahead(self, directories: list[str]) -> None:
        """Queue these folders first; start the worker processes once the walk has met enough folders."""
        self._upcoming.extendleft(reversed(directories))
        self._met += len(directories)
        if self._executor is None and self._met >= POOL_FOLDERS and self.processes > 1:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self.processes, mp_context=spawn_context(), initializer=serve,
                initargs=(os.getpid(),))
        self._hand_out()

    def _hand_out(self) -> None:
        executor = self._executor
        if executor is None:
            return
        running = held = 0
        for batch in self._batches:
            if not batch.done():
                running += 1
            elif not batch.cancelled() and batch.exception() is None:
                held += sum(map(len, batch.result()))
        if self._scanned_folders:
            average = self._scanned_entries / self._scanned_folders
            size = max(1, min(BATCH_FOLDERS, int(BATCH_ENTRIES / max(1.0, average))))
        else:
            size = FIRST_BATCH_FOLDERS
        while (self._upcoming and running < RUNNING_PER_PROCESS * self.processes
               and len(self._ahead) < AHEAD_FOLDERS and held < AHEAD_ENTRIES):
            count = min(size, len(self._upcoming), AHEAD_FOLDERS - len(self._ahead))
            directories = [self._upcoming.popleft() for _ in range(count)]
            try:
                batch = executor.submit(scan_folders, directories)
            except BrokenProcessPool:
                self._broken()
                return
            for place, directory in enumerate(directories):
                self._ahead[directory] = (batch, place)
            self._batches[batch] = count
            running += 1

    def _broken(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self.processes = 1  # no new pool
        self._ahead.clear()
        self._batches.clear()

    def close(self) -> None:
        """Stop the worker processes (scans under way finish first: a batch each)."""
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
