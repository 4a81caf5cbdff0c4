"""The job queue, kept entirely in the object store so any VM can die at any time.

Layout (the prefixes are the states, so a bucket listing shows the queue)::

    uploads/{id}/{filename}   the input image
    jobs/{id}.json            the job document (status, attempts, timings, keys)
    queue/{id}                marker: the job still needs a worker
    leases/{id}               {worker, expires_at}: a worker is processing it
    results/{id}.png          the grayscale result
    failed/{id}.json          copy of a failed job's document

Object stores have no atomic move, so a claim is a conditional create of the
lease ("only if absent"); an expired lease is taken over with a conditional
replace ("only if unchanged"). Every state change of a claimed job first
renews the lease, so a worker that lost its lease never overwrites the new
owner's work. Keys in job documents are relative to the store: they stay valid
after the bucket is migrated to another cloud.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from app.storage.base import Body, ObjectInfo, ObjectNotFound, ObjectStore, PreconditionFailed

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)

STATUSES = ("queued", "processing", "done", "failed")
UPLOADS = "uploads/"
JOBS = "jobs/"
QUEUE = "queue/"
LEASES = "leases/"
RESULTS = "results/"
FAILED = "failed/"
MAX_RECENT = 100

_JOB_ID = re.compile(r"[0-9a-f]{32}")
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class JobNotFound(LookupError):
    """No job with that id."""


class LeaseLost(Exception):
    """Another worker took over the lease (it had expired); abandon the job."""


class JobCorrupt(Exception):
    """The job's document exists but is not a valid job document."""


@dataclass(frozen=True)
class Lease:
    """A worker's time-limited claim on one job; ``version`` guards every update."""

    job_id: str
    worker: str
    expires_at: float
    version: str


@dataclass
class Claim:
    """A claimed job: its document and the lease that protects it (replaced on renewal)."""

    job: dict[str, Any]
    lease: Lease

    @property
    def job_id(self) -> str:
        """The claimed job's id."""
        return self.lease.job_id


def is_job_id(value: str) -> bool:
    """True for a well-formed job id: uuid4 hex, 32 lowercase hex characters."""
    return bool(_JOB_ID.fullmatch(value))


def safe_filename(name: str | None) -> str:
    """Reduce a client-supplied file name to one safe key segment."""
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = _UNSAFE_FILENAME_CHARS.sub("_", base).strip("._")[:100]
    return cleaned or "upload"


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except (TypeError, ValueError):
        return None


def job_problem(doc: Any, job_id: str) -> str | None:
    """Why ``doc`` is not a usable job document for ``job_id`` (None when it is)."""
    if not isinstance(doc, dict):
        return f"a JSON {type(doc).__name__}, not an object"
    if doc.get("id") != job_id:
        return f"id {doc.get('id')!r} does not match"
    if doc.get("status") not in STATUSES:
        return f"unknown status {doc.get('status')!r}"
    attempts = doc.get("attempts")
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
        return f"attempts {attempts!r} is not a count"
    if not all(isinstance(doc.get(name), str) for name in ("input_key", "created_at", "filename")):
        return "input_key, created_at or filename missing"
    if not isinstance(doc.get("timings", {}), dict):
        return "timings is not an object"
    return None


def _lease_expiry(doc: Any) -> float:
    """A lease document's expiry; 0 (expired) for anything unreadable, so it cannot block the job."""
    try:
        return float(doc.get("expires_at") or 0)
    except (AttributeError, TypeError, ValueError):
        return 0.0


def _created(info: ObjectInfo) -> str:
    # ISO-8601 UTC strings of one fixed format sort chronologically.
    if "created_at" in info.metadata:
        return info.metadata["created_at"]
    return _iso(info.updated.timestamp()) if info.updated else ""


class Queue:
    """Submit, claim, renew, complete, fail, retry and release jobs kept in an ObjectStore."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        lease_seconds: float = 60.0,
        max_attempts: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self._clock = clock

    @classmethod
    def from_settings(cls, store: ObjectStore, settings: Settings) -> Queue:
        """A queue with the lease length and attempt limit from ``Settings``."""
        return cls(store, lease_seconds=settings.LEASE_SECONDS, max_attempts=settings.MAX_ATTEMPTS)

    # -- keys ---------------------------------------------------------------------

    @staticmethod
    def job_key(job_id: str) -> str:
        """Key of a job's document."""
        return f"{JOBS}{job_id}.json"

    @staticmethod
    def marker_key(job_id: str) -> str:
        """Key of a job's queue marker."""
        return f"{QUEUE}{job_id}"

    @staticmethod
    def lease_key(job_id: str) -> str:
        """Key of a job's lease."""
        return f"{LEASES}{job_id}"

    @staticmethod
    def result_key(job_id: str) -> str:
        """Key of a job's result image."""
        return f"{RESULTS}{job_id}.png"

    @staticmethod
    def failed_key(job_id: str) -> str:
        """Key of a failed job's record."""
        return f"{FAILED}{job_id}.json"

    # -- submitting and reading ----------------------------------------------------

    def submit(self, data: Body, filename: str | None, content_type: str) -> dict[str, Any]:
        """Store the input, then the job document, then the marker that makes it claimable."""
        job_id = uuid.uuid4().hex
        input_key = f"{UPLOADS}{job_id}/{safe_filename(filename)}"
        info = self.store.put(input_key, data, content_type=content_type, if_absent=True)
        now = _iso(self._clock())
        job = {
            "id": job_id,
            "status": "queued",
            "filename": (filename or "")[:255],
            "content_type": content_type,
            "size": info.size,
            "input_key": input_key,
            "result_key": None,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "finished_at": None,
            "attempts": 0,
            "worker": None,
            "error": None,
            "timings": {},
        }
        self._save(job, if_absent=True)
        self.store.put(self.marker_key(job_id), b"", content_type="text/plain", if_absent=True)
        log.info("job %s: queued (%s, %d bytes)", job_id, input_key, info.size)
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        """The job's document; ``ValueError`` for a malformed id, ``JobNotFound`` if unknown, ``JobCorrupt``."""
        if not is_job_id(job_id):
            raise ValueError(f"malformed job id {job_id!r}")
        try:
            job = self.store.get_json(self.job_key(job_id))
        except ObjectNotFound:
            raise JobNotFound(job_id) from None
        except ValueError as err:
            raise JobCorrupt(f"job {job_id}: document is not JSON ({err})") from None
        problem = job_problem(job, job_id)
        if problem:
            raise JobCorrupt(f"job {job_id}: invalid document: {problem}")
        return job

    def read_input(self, job: dict[str, Any]) -> bytes:
        """The job's input bytes."""
        return self.store.get(job["input_key"])

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """Up to ``limit`` (at most 100) job documents, newest first."""
        limit = max(0, min(limit, MAX_RECENT))
        infos = sorted(self.store.list(JOBS), key=_created, reverse=True)
        jobs = []
        for info in infos:
            if len(jobs) >= limit:
                break
            try:
                job = self.store.get_json(info.key)
            except (ObjectNotFound, ValueError):
                continue
            job_id = info.key.removeprefix(JOBS).removesuffix(".json")
            if job_problem(job, job_id) is None:
                jobs.append(job)
            else:
                log.warning("%s: not a valid job document, left out of the listing", info.key)
        return jobs

    def counts(self) -> dict[str, int]:
        """Number of jobs in each status, from the job documents' metadata."""
        counts = dict.fromkeys(STATUSES, 0)
        for info in self.store.list(JOBS):
            status = info.metadata.get("status")
            if status is None:
                try:
                    status = self.store.get_json(info.key).get("status")
                except (ObjectNotFound, ValueError):
                    continue
            if status in counts:
                counts[status] += 1
        return counts

    def pending(self) -> bool:
        """True while any job is queued or being processed."""
        return any(is_job_id(info.key.removeprefix(QUEUE)) for info in self.store.list(QUEUE))

    # -- claiming and the lease ----------------------------------------------------

    def claim(self, worker_id: str) -> Claim | None:
        """Lease the oldest claimable job for ``worker_id`` and mark it processing; None if there is none."""
        markers = [info for info in self.store.list(QUEUE) if is_job_id(info.key.removeprefix(QUEUE))]
        markers.sort(key=lambda info: (info.updated or datetime.min.replace(tzinfo=timezone.utc), info.key))
        for marker in markers:
            job_id = marker.key.removeprefix(QUEUE)
            lease = self._acquire(job_id, worker_id)
            if lease is None:
                continue
            claim = self._start(job_id, lease)
            if claim is not None:
                return claim
        return None

    def _acquire(self, job_id: str, worker_id: str) -> Lease | None:
        key = self.lease_key(job_id)
        now = self._clock()
        doc = {"job_id": job_id, "worker": worker_id, "expires_at": now + self.lease_seconds}
        try:
            current = self.store.head(key)
        except ObjectNotFound:
            current = None
        try:
            if current is None:
                info = self.store.put_json(key, doc, if_absent=True)
            else:
                try:
                    held = self.store.get_json(key)
                except ValueError:
                    held = None  # an unreadable lease must not block the job forever
                expires_at = _lease_expiry(held)
                if expires_at > now:
                    return None
                info = self.store.put_json(key, doc, if_version=current.version)
                log.warning(
                    "job %s: lease of worker %s expired %.1fs ago, taken over by %s",
                    job_id, held.get("worker") if isinstance(held, dict) else None, now - expires_at, worker_id,
                )
        except (PreconditionFailed, ObjectNotFound):
            info = self._landed(key, doc)
            if info is None:
                return None  # another worker won the race
        return Lease(job_id, worker_id, doc["expires_at"], str(info.version))

    def _landed(self, key: str, doc: dict[str, Any]) -> ObjectInfo | None:
        """After a failed conditional write: the object's info if it holds exactly ``doc`` anyway.

        A write that committed but whose response was lost is retried by the
        backend and then fails its own precondition; the lease's expiry (a
        fresh timestamp) makes the document unique to that one write.
        """
        try:
            info = self.store.head(key)
            current = self.store.get_json(key)
        except (ObjectNotFound, ValueError):
            return None
        return info if current == doc else None

    def _start(self, job_id: str, lease: Lease) -> Claim | None:
        try:
            job = self.store.get_json(self.job_key(job_id))
        except ObjectNotFound:
            log.warning("job %s: marker without a job document, removing it", job_id)
            self.store.delete(self.marker_key(job_id))
            self._drop_lease(lease)
            return None
        except ValueError:
            job = None
        problem = job_problem(job, job_id) if job is not None else "not JSON"
        if problem:
            self._fail_corrupt(job_id, lease, f"job document unreadable: {problem}")
            return None
        claim = Claim(job, lease)
        if job["status"] in ("done", "failed"):
            # A worker died between writing the final status and removing the marker.
            self.store.delete(self.marker_key(job_id))
            self._drop_lease(lease)
            return None
        if job["attempts"] >= self.max_attempts:
            last = job.get("error") or "the worker was lost mid-job"
            self.fail(claim, f"gave up after {job['attempts']} attempts; last error: {last}")
            return None
        now = self._clock()
        job.update(status="processing", attempts=job["attempts"] + 1, worker=lease.worker, started_at=_iso(now))
        waited = now - (_epoch(job["created_at"]) or now)
        job["timings"] = {**job.get("timings", {}), "queued_seconds": round(waited, 3)}
        self._save(job)
        log.info(
            "job %s: claimed by worker %s (attempt %d/%d)",
            job_id, lease.worker, job["attempts"], self.max_attempts,
        )
        return claim

    def renew(self, lease: Lease) -> Lease:
        """Extend the lease by ``lease_seconds``; ``LeaseLost`` if another worker took it over."""
        expires_at = self._clock() + self.lease_seconds
        doc = {"job_id": lease.job_id, "worker": lease.worker, "expires_at": expires_at}
        key = self.lease_key(lease.job_id)
        try:
            info = self.store.put_json(key, doc, if_version=lease.version)
        except (PreconditionFailed, ObjectNotFound):
            landed = self._landed(key, doc)
            if landed is None:
                raise LeaseLost(f"job {lease.job_id}: worker {lease.worker} lost its lease") from None
            info = landed
        return replace(lease, expires_at=expires_at, version=str(info.version))

    def _confirm(self, claim: Claim) -> None:
        claim.lease = self.renew(claim.lease)

    def _drop_lease(self, lease: Lease) -> None:
        try:
            self.store.delete(self.lease_key(lease.job_id), if_version=lease.version)
        except (PreconditionFailed, ObjectNotFound):
            pass  # already gone or taken over: either way it is no longer ours

    # -- finishing a claimed job ---------------------------------------------------

    def complete(self, claim: Claim, result: bytes) -> dict[str, Any]:
        """Store the result, mark the job done, then remove its marker and lease."""
        self._confirm(claim)
        job, job_id = claim.job, claim.job_id
        result_key = self.result_key(job_id)
        self.store.put(result_key, result, content_type="image/png")
        now = self._clock()
        job.update(status="done", result_key=result_key, finished_at=_iso(now), error=None)
        job["timings"] = {
            **job.get("timings", {}),
            "processing_seconds": round(now - (_epoch(job["started_at"]) or now), 3),
            "total_seconds": round(now - (_epoch(job["created_at"]) or now), 3),
        }
        self._save(job)
        self.store.delete(self.marker_key(job_id))
        self._drop_lease(claim.lease)
        log.info("job %s: done by worker %s", job_id, claim.lease.worker)
        return job

    def fail(self, claim: Claim, reason: str) -> dict[str, Any]:
        """Mark the job failed with ``reason``, record it under ``failed/``, remove marker and lease."""
        self._confirm(claim)
        job = claim.job
        job.update(status="failed", error=reason, finished_at=_iso(self._clock()))
        self._record_failure(job, claim.lease)
        return job

    def _record_failure(self, job: dict[str, Any], lease: Lease) -> None:
        """Save a failed job, keep a copy under ``failed/``, remove its marker and lease."""
        self._save(job)
        self.store.put_json(self.failed_key(job["id"]), job)
        self.store.delete(self.marker_key(job["id"]))
        self._drop_lease(lease)
        log.warning("job %s: failed on worker %s: %s", job["id"], lease.worker, job["error"])

    def _fail_corrupt(self, job_id: str, lease: Lease, reason: str) -> None:
        """End a job whose document cannot be read: a minimal failed document replaces it."""
        now = _iso(self._clock())
        job = {"id": job_id, "status": "failed", "filename": "", "content_type": None, "size": None,
               "input_key": "", "result_key": None, "created_at": now, "updated_at": now, "started_at": None,
               "finished_at": now, "attempts": 0, "worker": lease.worker, "error": reason, "timings": {}}
        self._record_failure(job, lease)

    def retry(self, claim: Claim, reason: str) -> dict[str, Any]:
        """Queue the job again after a retryable error, or fail it once attempts reach the limit."""
        job = claim.job
        if job["attempts"] >= self.max_attempts:
            return self.fail(claim, f"{reason} (gave up after {job['attempts']} attempts)")
        self._confirm(claim)
        job.update(status="queued", error=reason, worker=None)
        self._save(job)
        self._drop_lease(claim.lease)
        log.warning(
            "job %s: attempt %d/%d on worker %s failed, will retry: %s",
            claim.job_id, job["attempts"], self.max_attempts, claim.lease.worker, reason,
        )
        return job

    def release(self, lease: Lease) -> None:
        """Give the job back (a drain, not a failure): status queued, attempt not counted, lease removed."""
        try:
            lease = self.renew(lease)
        except LeaseLost:
            return
        try:
            job = self.store.get_json(self.job_key(lease.job_id))
        except (ObjectNotFound, ValueError):
            job = None
        if job is not None and job_problem(job, lease.job_id) is None and job["status"] == "processing":
            job.update(status="queued", worker=None, attempts=max(0, job["attempts"] - 1))
            self._save(job)
        self._drop_lease(lease)
        log.info("job %s: released by worker %s", lease.job_id, lease.worker)

    def _save(self, job: dict[str, Any], *, if_absent: bool = False) -> None:
        job["updated_at"] = _iso(self._clock())
        metadata = {"status": job["status"], "created_at": job["created_at"]}
        self.store.put_json(self.job_key(job["id"]), job, metadata=metadata, if_absent=if_absent)
