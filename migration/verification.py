"""Verification: judge every source object's copy from the merged listings, and optionally re-read its bytes.

Fed by the same merge as the planner, so it runs in constant memory too
(only the problems found are kept). ``deep`` re-reads each matching target
object on the transfer pool and recomputes its checksums.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from app.storage.base import Hasher, ObjectInfo, ObjectNotFound, ObjectStore, StorageConfigError

from .merge import Pair
from .report import Problem, VerifyReport
from .rules import RetryPolicy, compare
from .transfer import STREAM_CHUNK, Pool, Progress, failure_reason, retrying


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


def deep_reason(source: ObjectStore, target: ObjectStore, src: ObjectInfo, target_key: str,
                retry: RetryPolicy, progress: Progress | None) -> str | None:
    """Re-read the target's bytes; compare their checksums with the source's (reading it too if it has none)."""
    try:
        got = retrying(lambda: _hash_stream(target, target_key, progress), retry)
    except ObjectNotFound:
        return "missing on target"
    if got.size != src.size:
        return f"deep check: target has {got.size} B, source {src.size} B"
    if src.md5:
        return None if got.md5 == src.md5.lower() else "deep check: target bytes differ from the source (MD5)"
    if src.crc32c:
        return None if got.crc32c == src.crc32c.lower() else "deep check: target bytes differ from the source (CRC32C)"
    want = retrying(lambda: _hash_stream(source, src.key, None), retry)
    return None if (want.md5, want.size) == (got.md5, got.size) else "deep check: target bytes differ from the source"


class Verifier:
    """Judges the pairs of a merge one by one; ``report()`` once they are all in.

    Late pairs (a key one side listed out of order) correct the verdict
    given when the key went by alone, so a listing order that differs
    between the backends never shows as missing or extra objects.
    """

    def __init__(self, source: ObjectStore, target: ObjectStore, target_prefix: str, *, deep: bool,
                 retry: RetryPolicy, progress: Progress | None, source_url: str, target_url: str,
                 pool: Pool[tuple[str, ObjectInfo]] | None = None) -> None:
        self.source, self.target, self.target_prefix = source, target, target_prefix
        self.deep, self.retry, self.progress = deep, retry, progress
        self._report = VerifyReport(source=source_url, target=target_url, deep=deep)
        self._problems: dict[str, tuple[str, bool]] = {}
        self._lock = threading.Lock()
        self._pool = pool

    def attach(self, pool: Pool[tuple[str, ObjectInfo]]) -> None:
        """The pool that runs the deep checks (``check_deep`` is its work function)."""
        self._pool = pool

    def judge(self, pair: Pair) -> None:
        """Account for one merged key."""
        report = self._report
        if pair.source is None:
            report.objects_extra += 1
            return
        if pair.late == "target":
            # The source key went by alone earlier and was judged missing: judge it again.
            with self._lock:
                self._problems.pop(pair.key, None)
            self._judge_copy(pair.key, pair.source, pair.target)
            return
        if pair.late == "source" and pair.target is not None and pair.partner_passed:
            report.objects_extra -= 1  # counted as extra when the target's listing went by
        report.objects_checked += 1
        report.bytes_checked += pair.source.size
        self._judge_copy(pair.key, pair.source, pair.target)

    def _judge_copy(self, key: str, source: ObjectInfo, target: ObjectInfo | None) -> None:
        reason = compare(source, target)
        if reason is not None:
            self.problem(key, reason, missing=target is None)
        elif self.deep:
            if self._pool is None:
                raise RuntimeError("deep verification needs a pool (attach one)")
            self._pool.submit((key, source))

    def problem(self, key: str, reason: str, *, missing: bool = False) -> None:
        """Record that ``key``'s copy is not verified (thread-safe)."""
        with self._lock:
            self._problems[key] = (reason, missing)

    def check_deep(self, task: tuple[str, ObjectInfo]) -> None:
        """Pool work: re-read one target object and compare its checksums with the source's."""
        key, info = task
        try:
            reason = deep_reason(self.source, self.target, info, self.target_prefix + key, self.retry, self.progress)
        except StorageConfigError:
            raise
        except Exception as err:
            reason = f"deep check could not read the object: {failure_reason(err)}"
        if reason is not None:
            self.problem(key, reason)
        if self.progress is not None:
            self.progress.advance(objects=1)

    def report(self, started: float) -> VerifyReport:
        """The finished report (problems sorted by key)."""
        report = self._report
        report.mismatches = [Problem(key, reason) for key, (reason, _) in sorted(self._problems.items())]
        report.objects_missing = sum(1 for _, missing in self._problems.values() if missing)
        report.objects_matched = report.objects_checked - len(self._problems)
        report.duration_seconds = time.monotonic() - started
        return report


def verify_pairs(pairs: Iterable[Pair], verifier: Verifier, workers: int) -> None:
    """Judge every pair, running deep checks on a pool of ``workers`` threads."""
    if verifier.deep:
        with Pool(verifier.check_deep, workers) as pool:
            verifier.attach(pool)
            for pair in pairs:
                verifier.judge(pair)
    else:
        for pair in pairs:
            verifier.judge(pair)
