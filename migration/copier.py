"""The migration engine: plan → copy → verify → report, streamed, written once against ``ObjectStore``.

Any direction works (GCS → Azure, Azure → GCS for rollback, local either
way): the engine only calls the interface's ``list``, ``stream``, ``put``,
``head`` and ``delete``. One run is three pieces, each in its own module:

* **Plan** (``migration.merge``): both listings walked in step in key order,
  one page of each held at a time. An object is copied when it is missing on
  the target, differs in size or content, or its content type, encoding,
  cache control or user metadata differ (``migration.rules.compare``).
  Content is compared by MD5, by CRC32C where the source has no MD5 (GCS
  composite objects), and by the source version where it has neither.
* **Provenance**: every blob written carries, in one user-metadata entry
  (``PROVENANCE_METADATA_KEY``), the source location and version and the
  source's checksums; ``provenance_of`` reads it, and the one-entry-per-field
  form earlier versions wrote. The next run decides "unchanged" from the two
  listings alone, without reading bytes. A target blob without provenance
  (written by something else) is never trusted.
* **Copy** (``migration.transfer``): the planner hands each copy to a
  bounded queue read by a pool of threads sharing one store (one client and
  connection pool) per side; large objects also take their share of a byte
  budget. The backends check the checksums over the bytes in transit and
  commit nothing on a mismatch, so a blob is either absent or complete with
  its provenance: a run killed at any moment resumes by running it again.
  Between two local directories the copies run in worker processes instead
  (``migration.processes``): there they are CPU work, which threads only share.
* **Resilience**: ``TransientStorageError`` (and a checksum mismatch, after
  looking whether the source changed meanwhile) is retried with exponential
  backoff and full jitter; a permanent error for one object is recorded and
  the others go on; ``StorageConfigError`` (missing bucket, access denied)
  stops the run, since every other object would fail the same way.
* **Verify** (``migration.verification``): ``sync`` checks what each put
  committed against the source's listing (the put itself verified the bytes
  in transit); ``verify`` walks both listings afresh with the same merge;
  ``deep``/``strict`` also re-read the target's bytes and recompute them.
* **Shards**: ``shard="I/N"`` restricts a run to a stable hash slice of the
  relative keys, so N runners copy, delete and verify disjoint sets whose
  union is everything.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from app.storage.base import ObjectInfo, ObjectStore, StorageConfigError

from .merge import Counter, EarlyListing, Pair, Selection, listing, merge, relative_stream
from .processes import ProcessPool, local_pair, process_count
from .report import Problem, SyncReport, VerifyReport
from .rules import (
    DEFAULT_RETRY,
    LEGACY_PROVENANCE_KEYS,
    PROVENANCE_METADATA_KEY,
    RESERVED_METADATA_PREFIX,
    DeleteLimitExceeded,
    KeyFilter,
    Provenance,
    RetryPolicy,
    Shard,
    UsageError,
    compare,
    content_id,
    location_url,
    normalize_prefix,
    provenance_for,
    provenance_of,
    user_metadata,
)
from .transfer import (
    DEFAULT_MAX_INFLIGHT_BYTES,
    DEFAULT_WORKERS,
    LARGE_OBJECT_COST,
    STREAM_CHUNK,
    Copier,
    Outcome,
    Pool,
    Progress,
    copy_task,
    failure_reason,
    retrying,
)
from .verification import Verifier, verify_pairs

__all__ = [
    "DEFAULT_MAX_DELETE", "DEFAULT_MAX_INFLIGHT_BYTES", "DEFAULT_RETRY", "DEFAULT_WORKERS", "LARGE_OBJECT_COST",
    "LEGACY_PROVENANCE_KEYS", "PROVENANCE_METADATA_KEY", "RESERVED_METADATA_PREFIX", "STREAM_CHUNK", "CopyItem",
    "DeleteLimitExceeded", "EarlyListing", "KeyFilter", "Plan", "Progress", "Provenance", "RetryPolicy", "Shard",
    "UsageError", "compare", "content_id", "location_url", "manifest_digest", "normalize_prefix", "plan",
    "provenance_for", "provenance_of", "sync", "user_metadata", "verify",
]

#: ``delete=True`` refuses to delete more target objects than this unless raised.
DEFAULT_MAX_DELETE = 100

#: Called for each decision of a dry run: ``("copy", key, reason)`` or ``("delete", key, "")``.
PlanSink = Callable[[str, str, str], None]


def _label(reason: str) -> str:
    return reason.split(" (")[0]


def _count_deletes(source: ObjectStore, target: ObjectStore, selection: Selection, retry: RetryPolicy,
                   early: EarlyListing | None, workers: int) -> int:
    """How many target objects a run with ``delete`` would remove (a listing-only pass)."""
    count = 0
    for pair in merge(source, target, selection, retry=retry, early=early, workers=workers):
        if pair.source is None:
            count += 1
        elif pair.late == "source" and pair.target is not None and pair.partner_passed:
            count -= 1
    return count


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
    early: EarlyListing | None = None,
    shard: Shard | str | None = None,
    on_planned: PlanSink | None = None,
    max_planned: int | None = None,
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
            ``DEFAULT_MAX_DELETE``. Not enforced by a dry run. Counting them
            first costs one more listing of both sides.
        dry_run: plan only; nothing is written.
        workers: parallel copies; between two local directories, also the most
            worker processes (copies, and the listings' folder scanners) at once.
        strict: verify deeply after copying (re-list, re-read every target object's bytes).
        progress: receives progress events (``Progress``), from worker threads.
        retry: backoff for transient errors.
        max_inflight_bytes: memory budget for object bodies in flight.
        early: a listing already started for one side (``EarlyListing``).
        shard: ``Shard`` or ``"I/N"``: only the keys of that slice.
        on_planned: dry run: receives each planned copy and deletion as it is decided.
        max_planned: dry run: keep at most this many planned copies and
            deletions in the report (None: all; the counts are always complete).

    Raises:
        StorageConfigError: a side is missing or not accessible (nothing else
            is attempted once it is seen).
        DeleteLimitExceeded: see ``max_delete``.
    """
    started = time.monotonic()
    selection = Selection.of(source_prefix, target_prefix, include, exclude, shard)
    report = SyncReport(source=location_url(source, selection.source_prefix),
                        target=location_url(target, selection.target_prefix), dry_run=dry_run, deep=strict)
    limit = DEFAULT_MAX_DELETE if max_delete is None else max_delete
    # A dry run shows the deletions even past the limit: that is how one decides to raise it.
    if delete and not dry_run:
        planned_deletes = _count_deletes(source, target, selection, retry, early, workers)
        early = None
        if planned_deletes > limit:
            raise DeleteLimitExceeded(
                f"refusing to delete {planned_deletes} objects from {report.target} "
                f"(more than --max-delete {limit}); nothing was copied or deleted. Check the locations and "
                f"filters, then raise --max-delete to at least {planned_deletes} if this is intended"
            )
    run = _SyncRun(source, target, selection, report, retry=retry, progress=progress,
                   max_inflight_bytes=max_inflight_bytes, delete=delete, dry_run=dry_run,
                   on_planned=on_planned, max_planned=max_planned)
    counts = (Counter(), Counter())
    pairs = merge(source, target, selection, retry=retry, early=early, counts=counts, workers=workers)
    if progress is not None and not dry_run:
        progress.phase("copy", 0, 0)
    if dry_run:
        for pair in pairs:
            run.decide(pair)
    else:
        with run.copy_pool(source, workers) as pool:
            run.submit = pool.submit
            for pair in pairs:
                run.decide(pair)
        run.run_deletes(workers)
    report.objects_source, report.objects_target = counts[0].objects, counts[1].objects
    report.objects_ignored = counts[0].ignored
    report.reasons = dict(run.reasons)
    report.failures.sort(key=lambda p: p.key)
    if dry_run:
        report.verified = report.objects_planned == 0
    elif strict:
        check = verify(source, target, source_prefix=selection.source_prefix, target_prefix=selection.target_prefix,
                       include=include, exclude=exclude, deep=True, workers=workers, progress=progress, retry=retry,
                       shard=selection.shard)
        report.mismatches = check.mismatches
        report.verified = check.verified and not report.failures
    else:
        report.mismatches = [Problem(k, r) for k, r in sorted(run.mismatches.items())]
        report.verified = not report.mismatches and not report.failures
    report.duration_seconds = time.monotonic() - started
    return report


class _SyncRun:
    """The decisions and tallies of one ``sync``: fed pair by pair by the merge."""

    def __init__(self, source: ObjectStore, target: ObjectStore, selection: Selection, report: SyncReport, *,
                 retry: RetryPolicy, progress: Progress | None, max_inflight_bytes: int, delete: bool,
                 dry_run: bool, on_planned: PlanSink | None, max_planned: int | None) -> None:
        self.target, self.selection, self.report = target, selection, report
        self.retry, self.progress = retry, progress
        self.delete, self.dry_run = delete, dry_run
        self.on_planned, self.max_planned = on_planned, max_planned
        self.copier = Copier(source, target, retry=retry, progress=progress, max_inflight_bytes=max_inflight_bytes)
        self.submit: Callable[[tuple[str, ObjectInfo]], None] = lambda task: None
        self.reasons: dict[str, int] = {}
        self.mismatches: dict[str, str] = {}
        # Held until the copies are done (deletes come last); bounded by max_delete.
        self.deletes: dict[str, ObjectInfo] = {}
        self.lock = threading.Lock()

    def _keep(self, listed: list) -> bool:
        return self.max_planned is None or len(listed) < self.max_planned

    def decide(self, pair: Pair) -> None:
        """Copy, skip or (later) delete one merged key."""
        report = self.report
        if pair.source is None:
            if self.delete and pair.target is not None:
                report.objects_to_delete += 1
                if self.dry_run:
                    if self.on_planned is not None:
                        self.on_planned("delete", pair.key, "")
                    if self._keep(report.planned_deletes):
                        report.planned_deletes.append(pair.key)
                else:
                    self.deletes[pair.key] = pair.target
            return
        if pair.late == "target":
            return  # decided when the source key went by alone
        if pair.late == "source" and pair.target is not None and pair.partner_passed and self.delete:
            # The target's copy went by alone and was marked for deletion: the source does have it.
            report.objects_to_delete -= 1
            self.deletes.pop(pair.key, None)
            if pair.key in report.planned_deletes:
                report.planned_deletes.remove(pair.key)
        info = pair.source
        reason = compare(info, pair.target)
        if reason is None:
            report.objects_skipped += 1
            report.bytes_skipped += info.size
            return
        report.objects_planned += 1
        report.bytes_planned += info.size
        label = _label(reason)
        self.reasons[label] = self.reasons.get(label, 0) + 1
        if self.dry_run:
            if self.on_planned is not None:
                self.on_planned("copy", pair.key, reason)
            if self._keep(report.planned_copies):
                report.planned_copies.append(Problem(pair.key, reason))
        else:
            if self.progress is not None:
                self.progress.planned(1, info.size)
            self.submit((pair.key, info))

    def copy_pool(self, source: ObjectStore, workers: int) -> Pool[Any] | ProcessPool:
        """Worker processes between two local directories (see ``migration.processes``), else threads."""
        if local_pair(source, self.target):
            return ProcessPool(source, self.target, target_prefix=self.selection.target_prefix,
                               processes=process_count(workers), retry=self.retry, record=self.record)
        pool: Pool[Any] = Pool(self.copy_one, workers)
        self.copier.pool = pool
        return pool

    def copy_one(self, task: tuple[str, ObjectInfo]) -> None:
        """Pool work: copy one object and record how it went."""
        key, info = task
        self.record(copy_task(self.copier, key, info, self.selection.target_prefix + key), 0)

    def record(self, outcome: Outcome, nbytes: int) -> None:
        """Count one finished copy (``nbytes``: bytes moved that progress has not been told of)."""
        report = self.report
        with self.lock:
            if outcome.failure is not None:
                report.objects_failed += 1
                report.bytes_failed += outcome.size
                report.failures.append(Problem(outcome.key, outcome.failure))
            else:
                report.objects_copied += 1
                report.bytes_copied += outcome.size
                if outcome.mismatch is not None:
                    self.mismatches[outcome.key] = outcome.mismatch
        if self.progress is not None:
            self.progress.advance(objects=1, nbytes=nbytes)

    def run_deletes(self, workers: int) -> None:
        """Delete what the merge found only on the target (each conditional on the version listed)."""
        if not self.deletes:
            return
        if self.progress is not None:
            self.progress.phase("delete", len(self.deletes), 0)
        with Pool(self._delete_one, workers) as pool:
            for item in self.deletes.items():
                pool.submit(item)

    def _delete_one(self, item: tuple[str, ObjectInfo]) -> None:
        key, info = item
        try:
            retrying(lambda: self.target.delete(info.key, if_version=info.version, missing_ok=True), self.retry)
        except StorageConfigError:
            raise
        except Exception as err:
            with self.lock:
                self.report.objects_delete_failed += 1
                self.report.failures.append(Problem(key, f"delete failed: {failure_reason(err)}"))
        else:
            with self.lock:
                self.report.objects_deleted += 1
        if self.progress is not None:
            self.progress.advance(objects=1)


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
    shard: Shard | str | None = None,
) -> VerifyReport:
    """Check every source object has a verified copy on the target; writes nothing.

    From listings: size, provenance checksums equal to the source's, the
    target's own checksum equal to them, content type and metadata. With
    ``deep``, also re-read each target object's bytes and recompute.
    """
    started = time.monotonic()
    selection = Selection.of(source_prefix, target_prefix, include, exclude, shard)
    verifier = Verifier(source, target, selection.target_prefix, deep=deep, retry=retry, progress=progress,
                        source_url=location_url(source, selection.source_prefix),
                        target_url=location_url(target, selection.target_prefix))
    if deep and progress is not None:
        progress.phase("verify", 0, 0)
    verify_pairs(merge(source, target, selection, retry=retry, early=early, workers=workers), verifier, workers)
    return verifier.report(started)


@dataclass(frozen=True)
class CopyItem:
    """One object to copy and why."""

    source: ObjectInfo
    target_key: str
    reason: str


@dataclass
class Plan:
    """Every decision of a run, held in memory: for inspecting small sets (``sync`` never builds one)."""

    source_url: str
    target_url: str
    source_prefix: str
    target_prefix: str
    copies: list[CopyItem] = field(default_factory=list)
    deletes: list[ObjectInfo] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    bytes_unchanged: int = 0
    ignored: int = 0

    @property
    def bytes_to_copy(self) -> int:
        """Sum of the sizes of the objects to copy."""
        return sum(item.source.size for item in self.copies)

    def reasons(self) -> dict[str, int]:
        """How many copies each reason accounts for (reasons without their numbers)."""
        counts: dict[str, int] = {}
        for item in self.copies:
            counts[_label(item.reason)] = counts.get(_label(item.reason), 0) + 1
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
    shard: Shard | str | None = None,
) -> Plan:
    """Every decision a ``sync`` would take, as lists (memory grows with the set: use on small sets)."""
    selection = Selection.of(source_prefix, target_prefix, include, exclude, shard)
    result = Plan(location_url(source, selection.source_prefix), location_url(target, selection.target_prefix),
                  selection.source_prefix, selection.target_prefix)
    deletes: dict[str, ObjectInfo] = {}
    counts = (Counter(), Counter())
    for pair in merge(source, target, selection, retry=retry, early=early, counts=counts):
        if pair.source is None:
            if delete and pair.target is not None:
                deletes[pair.key] = pair.target
            continue
        if pair.late == "target":
            continue
        deletes.pop(pair.key, None)
        reason = compare(pair.source, pair.target)
        if reason is None:
            result.unchanged.append(pair.key)
            result.bytes_unchanged += pair.source.size
        else:
            result.copies.append(CopyItem(pair.source, selection.target_prefix + pair.key, reason))
    result.deletes = list(deletes.values())
    result.ignored = counts[0].ignored
    return result


def manifest_digest(
    store: ObjectStore,
    prefix: str = "",
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    retry: RetryPolicy = DEFAULT_RETRY,
) -> str:
    """A SHA-256-based digest (hex) of the set of ``relative key, size, content id`` under ``prefix``.

    Independent of the listing order (backends order non-ASCII keys
    differently) and computed in one pass: the sum modulo 2**256 of each
    entry's SHA-256, hashed with the entry count. A source and a target
    holding the same content have the same digest (copies are identified by
    their source's checksum kind); a missing, extra or altered object changes it.
    """
    selection = Selection.of(prefix, "", include, exclude)
    total, count = 0, 0
    for relative, info in relative_stream(listing(store, selection.source_prefix, retry), selection.source_prefix,
                                          selection, Counter()):
        entry = f"{relative}\0{info.size}\0{content_id(info)}\n".encode("utf-8", "surrogatepass")
        total = (total + int.from_bytes(hashlib.sha256(entry).digest(), "big")) % (1 << 256)
        count += 1
    return hashlib.sha256(f"{count}:{total:064x}".encode()).hexdigest()
