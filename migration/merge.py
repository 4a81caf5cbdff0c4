"""The planner: both listings walked in step in key order (rclone's ``fs/march``), in constant memory.

Every backend lists in lexicographic key order with cursor paging, so the
merge holds a couple of pages of each side and never a whole listing; each
side is listed in a thread of its own (``read_ahead``), so the two services'
round trips overlap. A local directory's listing has its folders scanned in
worker processes (``migration.scanning``): there the listing is CPU and
``lstat`` work, not waiting. ``merge`` yields one ``Pair`` per relative key: both sides' infos, or one of them
when the other side has no such key.

The merge compares keys in Python's string order (code points, which is
UTF-8 byte order): GCS and LocalStore list in it; Azurite lists by UTF-16
code units, which differs for keys holding both supplementary characters
(emoji) and U+E000-U+FFFF (tests/storage/test_listing_order.py). Such keys
("ambiguous": a character from U+D800 up) are settled with a ``head`` on the
other side instead of being declared missing, and remembered until the other
listing reaches them, so each key is yielded once. Any other disorder (a key
arriving after a larger one: "late") is looked up with ``head`` too and
yielded with ``late`` set, so the consumer can undo a one-sided decision it
took when the key's partner went by (``sync`` holds its deletions until the
merge ends for that reason).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from app.storage.base import ObjectInfo, ObjectNotFound, ObjectStore, ReadAhead, TransientStorageError
from app.storage.local import LocalStore

from .processes import MAX_PROCESSES, process_count
from .rules import DEFAULT_RETRY, KeyFilter, RetryPolicy, Shard, normalize_prefix

#: Infos a listing thread reads ahead of the planner, in batches. The planner waits on the slower side,
#: so the faster one's read-ahead is always full: at 10,000 a 20,000-object GCS -> Azure no-op held
#: 15,000-18,000 infos of each side at its peak (tracemalloc: 29.8 MiB traced; 21.6 MiB at 2,000).
#: Requests overlap through the folder fan-out (``fan_out``), not through this buffer: a listing's next
#: page needs the last one's marker whatever is buffered.
PREFETCH = 2000
#: Infos handed from the listing thread to the planner at once: one queue operation per batch, not per info.
BATCH = 250

T = TypeVar("T")


class EarlyListing:
    """One store's listing under a prefix, started in a background thread before the planner needs it.

    The CLI starts the target's listing as soon as the target is open, so the
    listing's first round trips overlap the other SDK's import. It reads at
    most ``PREFETCH`` infos ahead (a ``ReadAhead``): memory stays constant.
    The next ``sync``/``verify`` given it takes the stream once instead of
    listing again; a failure before the first info falls back to an ordinary,
    retried listing when it is transient.
    """

    def __init__(self, store: ObjectStore, prefix: str = "", workers: int = MAX_PROCESSES) -> None:
        self.store = store
        self.prefix = normalize_prefix(prefix)
        self._taken = False
        self._reader = ReadAhead(_listed(store, self.prefix, workers), limit=PREFETCH, batch=BATCH,
                                 name="spotshift-early-list")

    def take(self, store: ObjectStore, prefix: str) -> Iterator[ObjectInfo] | None:
        """The listing stream if it is for ``store`` and ``prefix`` and not taken yet; None otherwise.

        A transient failure before any info arrived gives None (list again);
        any other failure before the first info is raised here.
        """
        if self._taken or store is not self.store or normalize_prefix(prefix) != self.prefix:
            return None
        self._taken = True
        try:
            first = self._reader.get()
        except TransientStorageError:
            return None
        return self._drain(first or [])

    def _drain(self, first: list[ObjectInfo]) -> Iterator[ObjectInfo]:
        try:
            yield from first
            yield from self._reader
        finally:
            self._reader.close()

    def cancel(self) -> None:
        """Stop reading ahead (the listing was not needed)."""
        self._reader.close()


def _listed(store: ObjectStore, prefix: str, workers: int) -> Iterator[ObjectInfo]:
    # A generator, so ``store.list`` is first called in the reading thread, not by the caller.
    yield from _list(store, prefix, workers)


def _list(store: ObjectStore, prefix: str, workers: int = MAX_PROCESSES) -> Iterator[ObjectInfo]:
    """``store.list(prefix)``; a local directory's with its folders scanned in worker processes (``scanning``).

    At most ``process_count(workers)`` of them: ``--workers 1`` lists in this process alone.
    """
    if isinstance(store, LocalStore):
        processes = process_count(workers)
        if processes > 1:
            from .scanning import scanned_listing  # process pools: imported only when a local listing needs them

            return scanned_listing(store, prefix, processes)
    return store.list(prefix)


def listing(store: ObjectStore, prefix: str, retry: RetryPolicy = DEFAULT_RETRY,
            early: EarlyListing | None = None, workers: int = MAX_PROCESSES) -> Iterator[ObjectInfo]:
    """``store.list(prefix)`` as one stream that survives transient errors.

    After a transient failure the listing starts again and skips what was
    already yielded (keys up to the last one), so a retry costs a re-listing
    of the part already seen, never memory. (A backend listing out of code
    point order may then repeat or skip a late key of that stretch: the next
    run sees it.)
    """
    prefix = normalize_prefix(prefix)
    stream = early.take(store, prefix) if early is not None else None
    last: str | None = None
    attempt = 0
    while True:
        infos = stream if stream is not None else _list(store, prefix, workers)
        stream = None
        resuming = last is not None
        try:
            for info in infos:
                if resuming:
                    if info.key <= last:  # type: ignore[operator]
                        continue
                    resuming = False
                last = info.key
                yield info
            return
        except TransientStorageError:
            if attempt >= retry.attempts - 1:
                raise
            time.sleep(retry.delay(attempt))
            attempt += 1


def read_ahead(items: Iterator[T], name: str = "spotshift-list") -> Iterator[T]:
    """``items`` read in a thread of its own (``ReadAhead``), at most ``PREFETCH`` ahead of the consumer.

    Each side's listing waits on its own service: read ahead, the two
    listings' round trips overlap instead of taking turns with the planner.
    Nothing starts until the first item is asked for. An error of the
    listing is raised to the consumer where it would have come; a consumer
    that stops early stops the thread.
    """
    reader = ReadAhead(items, limit=PREFETCH, batch=BATCH, name=name)
    try:
        yield from reader
    finally:
        reader.close()


@dataclass(frozen=True)
class Selection:
    """Which keys a run covers: the prefix on each side, the globs and the shard."""

    source_prefix: str = ""
    target_prefix: str = ""
    keep: KeyFilter = KeyFilter()
    shard: Shard = Shard()

    @classmethod
    def of(cls, source_prefix: str = "", target_prefix: str = "", include: Any = (), exclude: Any = (),
           shard: Shard | str | None = None) -> "Selection":
        """Normalised prefixes, globs and a shard (``Shard`` or ``"I/N"``)."""
        return cls(normalize_prefix(source_prefix), normalize_prefix(target_prefix), KeyFilter.of(include, exclude),
                   shard if isinstance(shard, Shard) else Shard.parse(shard))

    def wanted(self, relative: str) -> bool:
        """True for a key (relative to the prefix) this run covers."""
        return (not self.keep or self.keep(relative)) and self.shard(relative)


class Counter:
    """How many objects a side's listing held for the run, and how many folder markers it skipped."""

    def __init__(self) -> None:
        self.objects = 0
        self.ignored = 0


def relative_stream(infos: Iterator[ObjectInfo], prefix: str, selection: Selection,
                    counter: Counter) -> Iterator[tuple[str, ObjectInfo]]:
    """``(relative key, info)`` for the listed objects the selection covers; folder markers counted apart."""
    cut = len(prefix)
    wanted = selection.wanted if selection.keep or not selection.shard.whole else None
    for info in infos:
        relative = info.key[cut:]
        if not relative or relative[-1] == "/":
            counter.ignored += 1
        elif wanted is None or wanted(relative):
            counter.objects += 1
            yield relative, info


@dataclass(slots=True)
class Pair:
    """One relative key and what each side holds under it (None: absent on that side)."""

    key: str
    source: ObjectInfo | None
    target: ObjectInfo | None
    late: str = ""
    """``"source"`` or ``"target"`` when that side listed this key out of order (found by ``head`` on the other)."""
    partner_passed: bool = False
    """For a late source key: the target's listing already went past it (its copy was yielded alone before)."""


def merge(
    source: ObjectStore,
    target: ObjectStore,
    selection: Selection,
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
    early: EarlyListing | None = None,
    counts: tuple[Counter, Counter] | None = None,
    source_stream: Iterator[ObjectInfo] | None = None,
    workers: int = MAX_PROCESSES,
) -> Iterator[Pair]:
    """Walk both sorted listings in step; one ``Pair`` per relative key, in key order.

    ``counts`` receives how many objects each side listed; ``source_stream``
    replaces the source's listing (e.g. a prefetched one); ``workers`` bounds
    a local listing's scanner processes (``process_count``).
    """
    src_count, dst_count = counts if counts is not None else (Counter(), Counter())
    src = relative_stream(read_ahead(source_stream if source_stream is not None else
                                     listing(source, selection.source_prefix, retry, early, workers), "spotshift-list-source"),
                          selection.source_prefix, selection, src_count)
    dst = relative_stream(read_ahead(listing(target, selection.target_prefix, retry, early, workers),
                                     "spotshift-list-target"),
                          selection.target_prefix, selection, dst_count)
    return _march(src, dst, _looker(source, selection.source_prefix, retry),
                  _looker(target, selection.target_prefix, retry))


def _looker(store: ObjectStore, prefix: str, retry: RetryPolicy) -> Callable[[str], ObjectInfo | None]:
    def look(relative: str) -> ObjectInfo | None:
        for attempt in range(max(1, retry.attempts)):
            try:
                return store.head(prefix + relative)
            except ObjectNotFound:
                return None
            except TransientStorageError:
                if attempt >= retry.attempts - 1:
                    raise
                time.sleep(retry.delay(attempt))
        return None  # pragma: no cover

    return look


_DONE = (None, None)
#: Keys holding a character from here up sort differently by UTF-16 code units (Azurite,
#: Azure's own .NET heritage) than by code points (GCS, LocalStore, Python): surrogates vs U+E000-U+FFFF.
_AMBIGUOUS = "\ud800"


def _ambiguous(key: str) -> bool:
    return max(key) >= _AMBIGUOUS


def _march(src: Iterator[tuple[str, ObjectInfo]], dst: Iterator[tuple[str, ObjectInfo]],
           head_source: Callable[[str], ObjectInfo | None],
           head_target: Callable[[str], ObjectInfo | None]) -> Iterator[Pair]:
    """The merge proper. Keys the two orders may disagree on are settled by ``head`` and remembered
    (until the other listing reaches them), so each key is yielded once, whichever order each side uses."""
    s_key, s_info = next(src, _DONE)
    t_key, t_info = next(dst, _DONE)
    s_max = t_max = ""
    # Keys already yielded as pairs through a head, to pass over when that side's listing reaches them.
    seen_source: set[str] = set()
    seen_target: set[str] = set()
    while s_key is not None or t_key is not None:
        if s_key is not None and s_key in seen_source:
            seen_source.discard(s_key)
            s_key, s_info = next(src, _DONE)
            continue
        if t_key is not None and t_key in seen_target:
            seen_target.discard(t_key)
            t_key, t_info = next(dst, _DONE)
            continue
        if s_key is not None and s_key < s_max:
            found = head_target(s_key)
            if found is not None:
                seen_target.add(s_key)
            yield Pair(s_key, s_info, found, "source", s_key <= t_max and not _ambiguous(s_key))
            s_key, s_info = next(src, _DONE)
            continue
        if t_key is not None and t_key < t_max:
            found = head_source(t_key)
            if found is not None:
                seen_source.add(t_key)
            yield Pair(t_key, found, t_info, "target")
            t_key, t_info = next(dst, _DONE)
            continue
        if t_key is None or (s_key is not None and s_key < t_key):
            s_max = s_key
            found = head_target(s_key) if _ambiguous(s_key) else None
            if found is not None:
                seen_target.add(s_key)
            yield Pair(s_key, s_info, found)
            s_key, s_info = next(src, _DONE)
        elif s_key is None or t_key < s_key:
            t_max = t_key
            found = head_source(t_key) if _ambiguous(t_key) else None
            if found is not None:
                seen_source.add(t_key)
            yield Pair(t_key, found, t_info)
            t_key, t_info = next(dst, _DONE)
        else:
            s_max = t_max = s_key
            yield Pair(s_key, s_info, t_info)
            s_key, s_info = next(src, _DONE)
            t_key, t_info = next(dst, _DONE)
