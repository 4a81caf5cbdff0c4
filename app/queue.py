"""The job queue, kept entirely in the object store so any VM can die at any time.

Layout (the prefixes are the states, so a bucket listing shows the queue)::

    uploads/{id}/{filename}   the input image
    jobs/{id}.json            the job document (status, attempts, timings, keys)
    index/{age}-{id}          empty, written once: ``age`` sorts newest first, so one
                              listing page is the newest jobs whatever the history
    queue/{id}                marker: the job still needs a worker
    leases/{id}               {worker, expires_at, attempt, started_at}: a worker is
                              processing it (also in the lease's metadata, so a
                              listing shows every lease without reading them)
    results/{id}.png          the grayscale result
    failed/{id}.json          copy of a failed job's document

Job ids are UUIDv7 (time-ordered), so ``queue/`` lists oldest first; ids of
older buckets (uuid4) stay valid, ``backfill_index`` gives their jobs an index
entry. Object stores have no atomic move, so a claim is a conditional create of
the lease ("only if absent"); an expired lease is taken over with a conditional
replace ("only if unchanged"). Every state change of a claimed job first
checks the lease, so a worker that lost its lease never overwrites the new
owner's work. While a job runs its state lives in the lease; the job document
is written at submit and when an attempt ends, never twice within
``rewrite_gap`` seconds (Cloud Storage allows about one write per second to an
object name), and a lease younger than that is deleted later rather than at
once. Keys in job documents are relative to the store: they stay valid after
the bucket is migrated to another cloud.
"""

from __future__ import annotations

import base64
import binascii
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import uuid6

from app.storage.base import Body, ObjectInfo, ObjectNotFound, ObjectStore, PreconditionFailed

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)

STATUSES = ("queued", "processing", "done", "failed")
UPLOADS = "uploads/"
JOBS = "jobs/"
INDEX = "index/"
QUEUE = "queue/"
LEASES = "leases/"
RESULTS = "results/"
FAILED = "failed/"
MAX_RECENT = 100
#: Markers a claim reads (one listing request) and leases it reads alongside.
CLAIM_PAGE = 64
LEASE_PAGE = 1000
#: Concurrent workers pick at random among the first this many free markers, so they rarely collide.
CLAIM_SPREAD = 32
#: ``counts`` reads at most this many markers and leases (one listing page each); the count saturates there.
COUNT_CAP = 1000
#: Seconds between two writes of one object name (Cloud Storage: about one per second).
REWRITE_GAP = 1.0

_JOB_ID = re.compile(r"[0-9a-f]{32}")
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_NEWEST = (1 << 48) - 1  # 48-bit milliseconds, as in UUIDv7: lasts until the year 10889


#: Job documents of one page read at once (the store clients are thread-safe; the API's threads share one).
PAGE_READS = 8
#: Starts no thread until a page is read.
_page_reads = ThreadPoolExecutor(PAGE_READS, thread_name_prefix="page-read")


class JobNotFound(LookupError):
    """No job with that id."""


class InvalidCursor(ValueError):
    """A paging cursor that this queue did not hand out."""


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
    attempt: int = 1
    started_at: str = ""
    written_at: float = 0.0


@dataclass
class Claim:
    """A claimed job: its document and the lease that protects it (replaced on renewal)."""

    job: dict[str, Any]
    lease: Lease

    @property
    def job_id(self) -> str:
        """The claimed job's id."""
        return self.lease.job_id


@dataclass
class JobPage:
    """One page of jobs, newest first, and the cursor of the next (older) page, None at the end."""

    jobs: list[dict[str, Any]]
    cursor: str | None = None


@dataclass
class _Deferred:
    """Leases to delete once they are ``REWRITE_GAP`` old."""

    leases: list[Lease] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def new_job_id() -> str:
    """A new job id: UUIDv7 as 32 lowercase hex characters, so ids sort by creation time."""
    return uuid6.uuid7().hex


def index_key(job_id: str, created_at: str) -> str:
    """The job's entry in ``index/``: keys sort newest first (then by id)."""
    millis = int((_epoch(created_at) or 0.0) * 1000)
    return f"{INDEX}{_NEWEST - min(max(millis, 0), _NEWEST):012x}-{job_id}"


def _index_job_id(key: str) -> str | None:
    job_id = key.removeprefix(INDEX).partition("-")[2]
    return job_id if is_job_id(job_id) else None


def encode_cursor(token: str) -> str:
    """A listing token as an opaque, URL-safe cursor."""
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The listing token inside a cursor; ``InvalidCursor`` for anything else."""
    try:
        token = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor("invalid cursor") from None
    if not token or not token.isprintable() or len(token) > 2048:
        raise InvalidCursor("invalid cursor")
    return token


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


def _lease_metadata(doc: dict[str, Any]) -> dict[str, str]:
    return {
        "worker": str(doc["worker"]),
        "expires_at": repr(doc["expires_at"]),
        "attempt": str(doc["attempt"]),
        "started_at": doc["started_at"],
    }


def _listed_lease(info: ObjectInfo) -> tuple[float, int] | None:
    """Expiry and attempt of a lease from its listing metadata; None when it has none (read the lease)."""
    try:
        return float(info.metadata["expires_at"]), int(info.metadata.get("attempt", "0"))
    except (KeyError, ValueError):
        return None


class Queue:
    """Submit, claim, renew, complete, fail, retry and release jobs kept in an ObjectStore."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        lease_seconds: float = 60.0,
        max_attempts: int = 3,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rewrite_gap: float = REWRITE_GAP,
    ) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.rewrite_gap = rewrite_gap
        self._clock = clock
        self._sleep = sleep
        self._deferred = _Deferred()

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
        """Store the input, the job document and its index entry, then the marker that makes it claimable."""
        job_id = new_job_id()
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
        self.store.put(index_key(job_id, now), b"", content_type="text/plain", if_absent=True)
        self.store.put(self.marker_key(job_id), b"", content_type="text/plain", if_absent=True)
        log.info("job %s: queued (%s, %d bytes)", job_id, input_key, info.size)
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        """The job's document; ``ValueError`` for a malformed id, ``JobNotFound`` if unknown, ``JobCorrupt``."""
        job = self._read(job_id)
        if job["status"] == "queued":
            try:
                lease = self.store.head(self.lease_key(job_id))
            except ObjectNotFound:
                return job
            self._overlay(job, lease)
        return job

    def _read(self, job_id: str) -> dict[str, Any]:
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

    def _read_listed(self, job_id: str) -> dict[str, Any] | None:
        """A listed job's document, or None (with a warning for a damaged one) to leave it off the page."""
        try:
            return self._read(job_id)
        except JobNotFound:
            return None  # submitted but its document is gone: nothing to show
        except JobCorrupt:
            log.warning("job %s: not a valid job document, left out of the listing", job_id)
            return None

    def _overlay(self, job: dict[str, Any], lease: ObjectInfo) -> None:
        """Show a queued job as processing while a live lease of a newer attempt holds it."""
        listed = _listed_lease(lease)
        if listed is not None:
            expires_at, attempt = listed
            worker, started_at = lease.metadata.get("worker"), lease.metadata.get("started_at")
        else:  # a lease without metadata (written by an older version): read it
            try:
                doc = self.store.get_json(lease.key)
            except (ObjectNotFound, ValueError):
                return
            if not isinstance(doc, dict):
                return
            expires_at = _lease_expiry(doc)
            attempt = doc.get("attempt") if isinstance(doc.get("attempt"), int) else job["attempts"] + 1
            worker, started_at = doc.get("worker"), doc.get("started_at")
        if expires_at > self._clock() and attempt > job["attempts"]:
            job.update(status="processing", attempts=attempt, worker=worker, started_at=started_at)

    def read_input(self, job: dict[str, Any]) -> bytes:
        """The job's input bytes."""
        return self.store.get(job["input_key"])

    def page(self, limit: int = 20, cursor: str | None = None) -> JobPage:
        """Up to ``limit`` (at most 100) jobs, newest first, from one listing page of ``index/``.

        ``cursor`` is a previous page's; ``InvalidCursor`` for one this queue did not hand out.
        """
        limit = max(1, min(limit, MAX_RECENT))
        token = decode_cursor(cursor) if cursor is not None else None
        listing = self.store.list_page(INDEX, limit, token)
        job_ids = [job_id for job_id in map(_index_job_id, (info.key for info in listing.items)) if job_id]
        # The documents are read side by side: a page costs about one round trip, not ``limit`` of them.
        jobs = [job for job in _page_reads.map(self._read_listed, job_ids) if job is not None]
        if any(job["status"] == "queued" for job in jobs):
            leases = {info.key.removeprefix(LEASES): info for info in self.store.list_page(LEASES, LEASE_PAGE).items}
            for job in jobs:
                if job["status"] == "queued" and job["id"] in leases:
                    self._overlay(job, leases[job["id"]])
        return JobPage(jobs, encode_cursor(listing.token) if listing.token else None)

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """Up to ``limit`` (at most 100) job documents, newest first."""
        return self.page(limit).jobs

    def counts(self) -> dict[str, int]:
        """Jobs waiting and in progress, from one listing page of markers and one of leases (at most COUNT_CAP)."""
        markers = {
            info.key.removeprefix(QUEUE) for info in self.store.list_page(QUEUE, COUNT_CAP).items
        }
        markers = {job_id for job_id in markers if is_job_id(job_id)}
        now = self._clock()
        processing = 0
        for info in self.store.list_page(LEASES, COUNT_CAP).items:
            listed = _listed_lease(info)
            if info.key.removeprefix(LEASES) in markers and (listed is None or listed[0] > now):
                processing += 1
        return {"queued": len(markers) - processing, "processing": processing}

    def pending(self) -> bool:
        """True while any job is queued or being processed."""
        return any(is_job_id(info.key.removeprefix(QUEUE)) for info in self.store.list_page(QUEUE, 1).items)

    def backfill_index(self) -> tuple[int, int]:
        """Give every job document an ``index/`` entry (for buckets from before the index); (added, present).

        A one-time walk of ``jobs/``, safe to run again or alongside the API and
        workers: entries are created only if absent.
        """
        added = present = 0
        for info in self.store.list(JOBS):
            job_id = info.key.removeprefix(JOBS).removesuffix(".json")
            if not is_job_id(job_id) or not info.key.endswith(".json"):
                continue
            created_at = info.metadata.get("created_at")
            if created_at is None:
                try:
                    created_at = self.store.get_json(info.key).get("created_at")
                except (ObjectNotFound, ValueError, AttributeError):
                    created_at = None
            if not isinstance(created_at, str):
                log.warning("%s: no creation time, left out of the index", info.key)
                continue
            try:
                self.store.put(index_key(job_id, created_at), b"", content_type="text/plain", if_absent=True)
            except PreconditionFailed:
                present += 1
            else:
                added += 1
        log.info("index backfill: %d entries added, %d already there", added, present)
        return added, present

    # -- claiming and the lease ----------------------------------------------------

    def claim(self, worker_id: str) -> Claim | None:
        """Lease one of the oldest claimable jobs for ``worker_id``; None if there is none.

        Reads one page of markers (an empty queue costs that one request) and
        one of leases, then tries the free markers, the first ``CLAIM_SPREAD``
        in random order so concurrent workers spread over them.
        """
        self._sweep()
        token = None
        while True:
            markers = self.store.list_page(QUEUE, CLAIM_PAGE, token)
            job_ids = [info.key.removeprefix(QUEUE) for info in markers.items]
            job_ids = [job_id for job_id in job_ids if is_job_id(job_id)]
            if not job_ids:
                return None
            leases = {info.key.removeprefix(LEASES): info for info in self.store.list_page(LEASES, LEASE_PAGE).items}
            free = [(job_id, leases.get(job_id)) for job_id in job_ids if self._claimable(leases.get(job_id))]
            head = free[:CLAIM_SPREAD]
            random.shuffle(head)
            for job_id, held in head + free[CLAIM_SPREAD:]:
                claim = self._try(job_id, worker_id, held)
                if claim is not None:
                    return claim
            if markers.token is None:
                return None
            token = markers.token

    def _claimable(self, held: ObjectInfo | None) -> bool:
        if held is None:
            return True
        listed = _listed_lease(held)
        if listed is None:
            return True  # no metadata (unreadable or older lease): _try reads it
        return listed[0] <= self._clock()

    def _try(self, job_id: str, worker_id: str, held: ObjectInfo | None) -> Claim | None:
        """Read the job, take its lease (or lose the race: None) and hand it out as a claim."""
        try:
            job = self.store.get_json(self.job_key(job_id))
        except ObjectNotFound:
            log.warning("job %s: marker without a job document, removing it", job_id)
            self.store.delete(self.marker_key(job_id))
            return None
        except ValueError:
            job = None
        problem = job_problem(job, job_id) if job is not None else "not JSON"
        previous = 0
        if held is not None:
            listed = _listed_lease(held)
            if listed is None:
                try:
                    doc = self.store.get_json(held.key)
                except ObjectNotFound:
                    held = None  # deleted since the listing: create it afresh
                    doc = None
                except ValueError:
                    doc = None  # an unreadable lease must not block the job forever
                if held is not None and _lease_expiry(doc) > self._clock():
                    return None
                previous = doc.get("attempt", 0) if isinstance(doc, dict) else 0
                previous = previous if isinstance(previous, int) else 0
            else:
                previous = listed[1]
        attempts = job["attempts"] if not problem else 0
        lease = self._acquire(job_id, worker_id, max(attempts, previous) + 1, held)
        if lease is None:
            return None
        if problem:
            self._fail_corrupt(job_id, lease, f"job document unreadable: {problem}")
            return None
        claim = Claim(job, lease)
        if job["status"] in ("done", "failed"):
            # A worker died between writing the final status and removing the marker.
            self.store.delete(self.marker_key(job_id))
            self._drop_lease(lease)
            return None
        if max(attempts, previous) >= self.max_attempts:
            last = job.get("error") or "the worker was lost mid-job"
            job["attempts"] = max(attempts, previous)
            self.fail(claim, f"gave up after {job['attempts']} attempts; last error: {last}")
            return None
        now = self._clock()
        job.update(status="processing", attempts=lease.attempt, worker=lease.worker, started_at=lease.started_at)
        waited = now - (_epoch(job["created_at"]) or now)
        job["timings"] = {**job.get("timings", {}), "queued_seconds": round(waited, 3)}
        log.info(
            "job %s: claimed by worker %s (attempt %d/%d)",
            job_id, lease.worker, job["attempts"], self.max_attempts,
        )
        return claim

    def _acquire(self, job_id: str, worker_id: str, attempt: int, held: ObjectInfo | None) -> Lease | None:
        key = self.lease_key(job_id)
        now = self._clock()
        doc = {
            "job_id": job_id, "worker": worker_id, "expires_at": now + self.lease_seconds,
            "attempt": attempt, "started_at": _iso(now),
        }
        try:
            if held is None:
                info = self.store.put_json(key, doc, metadata=_lease_metadata(doc), if_absent=True)
            else:
                info = self.store.put_json(key, doc, metadata=_lease_metadata(doc), if_version=held.version)
                log.warning(
                    "job %s: lease of worker %s expired, taken over by %s",
                    job_id, held.metadata.get("worker"), worker_id,
                )
        except (PreconditionFailed, ObjectNotFound):
            info = self._landed(key, doc)
            if info is None:
                return None  # another worker won the race
        return Lease(job_id, worker_id, doc["expires_at"], str(info.version), attempt, doc["started_at"], now)

    def _landed(self, key: str, doc: dict[str, Any]) -> ObjectInfo | None:
        """After a failed conditional write: the lease's info if it holds exactly ``doc`` anyway.

        A write that committed but whose response was lost is retried by the
        backend and then fails its own precondition; the lease's expiry (a
        fresh timestamp) makes the document unique to that one write. The
        lease's metadata says so in one request; without it, the body is read.
        """
        try:
            info = self.store.head(key)
        except ObjectNotFound:
            return None
        if "expires_at" in info.metadata:
            return info if info.metadata == {**info.metadata, **_lease_metadata(doc)} else None
        try:
            current = self.store.get_json(key)
        except (ObjectNotFound, ValueError):
            return None
        return info if current == doc else None

    def renew(self, lease: Lease) -> Lease:
        """Extend the lease by ``lease_seconds``; ``LeaseLost`` if another worker took it over."""
        now = self._clock()
        expires_at = now + self.lease_seconds
        doc = {
            "job_id": lease.job_id, "worker": lease.worker, "expires_at": expires_at,
            "attempt": lease.attempt, "started_at": lease.started_at,
        }
        key = self.lease_key(lease.job_id)
        try:
            info = self.store.put_json(key, doc, metadata=_lease_metadata(doc), if_version=lease.version)
        except (PreconditionFailed, ObjectNotFound):
            landed = self._landed(key, doc)
            if landed is None:
                raise LeaseLost(f"job {lease.job_id}: worker {lease.worker} lost its lease") from None
            info = landed
        return replace(lease, expires_at=expires_at, version=str(info.version), written_at=now)

    def _confirm(self, claim: Claim) -> None:
        """Make sure the lease is still ours: a read while it has time left, a renewal near its end."""
        lease = claim.lease
        if lease.expires_at - self._clock() > self.lease_seconds / 2:
            try:
                current = self.store.head(self.lease_key(lease.job_id))
            except ObjectNotFound:
                current = None
            if current is None or str(current.version) != lease.version:
                raise LeaseLost(f"job {lease.job_id}: worker {lease.worker} lost its lease")
            return
        claim.lease = self.renew(lease)

    def _drop_lease(self, lease: Lease) -> None:
        try:
            self.store.delete(self.lease_key(lease.job_id), if_version=lease.version)
        except (PreconditionFailed, ObjectNotFound):
            pass  # already gone or taken over: either way it is no longer ours

    def _expire_soon(self, lease: Lease) -> None:
        """Let the lease run out ``rewrite_gap`` from now: the next claim takes it over, a second after this write.

        Deleting it instead would let the next claim create the same name again
        at once, faster than Cloud Storage accepts writes to one name.
        """
        self._await_gap(lease.written_at)
        doc = {
            "job_id": lease.job_id, "worker": lease.worker, "expires_at": self._clock() + self.rewrite_gap,
            "attempt": lease.attempt, "started_at": lease.started_at,
        }
        try:
            self.store.put_json(
                self.lease_key(lease.job_id), doc, metadata=_lease_metadata(doc), if_version=lease.version
            )
        except (PreconditionFailed, ObjectNotFound):
            pass  # taken over meanwhile: the new owner has it

    def _drop_lease_soon(self, lease: Lease) -> None:
        """Delete the lease now if it was written ``rewrite_gap`` ago, otherwise on a later claim or ``flush``."""
        if self._clock() - lease.written_at >= self.rewrite_gap:
            self._drop_lease(lease)
            return
        with self._deferred.lock:
            self._deferred.leases.append(lease)

    def _sweep(self, *, wait: bool = False) -> None:
        """Delete the deferred leases that are old enough (all of them with ``wait``, sleeping as needed)."""
        with self._deferred.lock:
            due, later = [], []
            for lease in self._deferred.leases:
                (due if wait or self._clock() - lease.written_at >= self.rewrite_gap else later).append(lease)
            self._deferred.leases = later
        for lease in due:
            self._await_gap(lease.written_at)
            self._drop_lease(lease)

    def flush(self) -> None:
        """Delete every lease still waiting for its gap (a worker calls this before it exits)."""
        self._sweep(wait=True)

    # -- finishing a claimed job ---------------------------------------------------

    def complete(self, claim: Claim, result: bytes) -> dict[str, Any]:
        """Store the result, mark the job done, then remove its marker and lease."""
        self._confirm(claim)
        job, job_id = claim.job, claim.job_id
        result_key = self.result_key(job_id)
        self.store.put(result_key, result, content_type="image/png")
        self._await_gap(_epoch(job["updated_at"]))
        now = self._clock()
        job.update(status="done", result_key=result_key, finished_at=_iso(now), error=None)
        job["timings"] = {
            **job.get("timings", {}),
            "processing_seconds": round(now - (_epoch(job["started_at"]) or now), 3),
            "total_seconds": round(now - (_epoch(job["created_at"]) or now), 3),
        }
        self._save(job)
        self.store.delete(self.marker_key(job_id))
        self._drop_lease_soon(claim.lease)
        log.info("job %s: done by worker %s", job_id, claim.lease.worker)
        return job

    def fail(self, claim: Claim, reason: str) -> dict[str, Any]:
        """Mark the job failed with ``reason``, record it under ``failed/``, remove marker and lease."""
        self._confirm(claim)
        job = claim.job
        self._await_gap(_epoch(job["updated_at"]))
        job.update(status="failed", error=reason, finished_at=_iso(self._clock()))
        self._record_failure(job, claim.lease)
        return job

    def _record_failure(self, job: dict[str, Any], lease: Lease) -> None:
        """Save a failed job, keep a copy under ``failed/``, remove its marker and lease."""
        self._save(job)
        self.store.put_json(self.failed_key(job["id"]), job)
        self.store.delete(self.marker_key(job["id"]))
        self._drop_lease_soon(lease)
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
        self._await_gap(_epoch(job["updated_at"]))
        job.update(status="queued", error=reason, worker=None)
        self._save(job)
        self._expire_soon(claim.lease)
        log.warning(
            "job %s: attempt %d/%d on worker %s failed, will retry: %s",
            claim.job_id, job["attempts"], self.max_attempts, claim.lease.worker, reason,
        )
        return job

    def release(self, lease: Lease) -> None:
        """Give the job back (a drain, not a failure): the lease goes, the document was never changed."""
        try:
            self.store.delete(self.lease_key(lease.job_id), if_version=lease.version)
        except (PreconditionFailed, ObjectNotFound):
            return  # taken over: the new owner has it
        log.info("job %s: released by worker %s", lease.job_id, lease.worker)

    def _await_gap(self, last_write: float | None) -> None:
        """Sleep until ``rewrite_gap`` seconds have passed since ``last_write`` (a store time in seconds)."""
        if last_write is None:
            return
        # +1 ms: stored times are rounded down to the millisecond.
        remaining = last_write + self.rewrite_gap + 0.001 - self._clock()
        if remaining > 0:
            self._sleep(remaining)

    def _save(self, job: dict[str, Any], *, if_absent: bool = False) -> None:
        job["updated_at"] = _iso(self._clock())
        metadata = {"status": job["status"], "created_at": job["created_at"]}
        self.store.put_json(self.job_key(job["id"]), job, metadata=metadata, if_absent=if_absent)
