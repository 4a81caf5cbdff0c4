"""The HTTP routes: upload page, jobs, results, previews, health and metrics."""

from __future__ import annotations

import hashlib
import itertools
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from app.api import pages
from app.api.deps import MetricsDep, QueueDep, SettingsDep, StoreDep
from app.api.errors import error_responses
from app.api.metrics import Metrics
from app.api.previews import check_decodes, thumbnail_jpeg
from app.api.schemas import Health, JobList, JobView
from app.imaging import ImageError, ImageTooLarge, ImageInfo, verify_image
from app.queue import InvalidCursor, JobCorrupt, JobNotFound, JobPage, Queue, is_job_id
from app.settings import Settings
from app.storage.base import ObjectNotFound, ObjectStore, PreconditionFailed, StorageError

router = APIRouter()

#: A page cursor is opaque: only a ``next_cursor`` this API handed out is valid (others answer 422).
CursorParam = Annotated[
    str | None,
    Query(max_length=4096, pattern=r"^[A-Za-z0-9_-]+$", description="A previous page's `next_cursor`."),
]

#: Seconds a client should wait before retrying a write during the cutover freeze.
READ_ONLY_RETRY_AFTER = "120"
#: Room for multipart boundaries and part headers on top of MAX_UPLOAD_BYTES.
MULTIPART_OVERHEAD = 64 * 1024
#: The job-id format, as ``app.queue.is_job_id`` checks it (declared so clients and fuzzers know it).
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
#: Stored previews: one per job and kind, written once.
THUMBNAILS = "thumbnails/"
#: Previews never change once made (the input is immutable, a result exists only once done).
THUMBNAIL_CACHE = "public, max-age=604800, immutable"

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="A job id: 32 lowercase hex characters.")]

_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
                "additionalProperties": False,
            }
        }
    },
}
_PNG = {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}, "description": "The PNG."}
_JPEG = {
    "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
    "description": "A JPEG preview, at most 320 pixels on its longest side.",
    "headers": {"Cache-Control": {"schema": {"type": "string"}}, "ETag": {"schema": {"type": "string"}}},
}


class _BodyTooLarge(Exception):
    """The request body grew past the limit while being read."""


async def _read_form(request: Request, max_bytes: int) -> FormData:
    """Parse a multipart body, counting bytes as they arrive so a huge body is cut off early."""
    received = 0

    async def limited() -> Any:
        nonlocal received
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise _BodyTooLarge
            yield chunk

    return await MultiPartParser(request.headers, limited(), max_files=1, max_fields=2).parse()


def _inspect(source: BinaryIO, max_pixels: int) -> ImageInfo:
    """Verify the upload's structure, then decode it where that is cheap."""
    info = verify_image(source, max_pixels)
    source.seek(0)
    check_decodes(source, max_pixels)
    return info


async def _parse_upload(request: Request, settings: Settings) -> FormData:
    """The request's multipart form, within the size limit; every client mistake becomes a 4xx."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        raise HTTPException(415, "expected multipart/form-data")
    max_body = settings.MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise HTTPException(400, "invalid content-length")
    if declared is not None and int(declared) > max_body:
        raise HTTPException(413, "upload too large")
    try:
        return await _read_form(request, max_body)
    except _BodyTooLarge:
        raise HTTPException(413, "upload too large") from None
    except MultiPartException as exc:
        if str(exc).startswith("Too many"):
            raise HTTPException(422, "unexpected form field") from None
        raise HTTPException(400, "malformed multipart body") from None


async def _receive_upload(request: Request, queue: Queue, settings: Settings) -> dict[str, Any]:
    """Check and enqueue one uploaded image."""
    if settings.READ_ONLY:
        raise HTTPException(503, "read-only", headers={"Retry-After": READ_ONLY_RETRY_AFTER})
    form = await _parse_upload(request, settings)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "missing file field")
        if any(name != "file" for name in form.keys()):
            raise HTTPException(422, "unexpected form field")
        if upload.size is not None and upload.size > settings.MAX_UPLOAD_BYTES:
            raise HTTPException(413, "upload too large")
        try:
            info = await run_in_threadpool(_inspect, upload.file, settings.MAX_IMAGE_PIXELS)
        except ImageTooLarge:
            raise HTTPException(413, "image too large") from None
        except ImageError:
            raise HTTPException(415, "not an image") from None
        await upload.seek(0)
        return await run_in_threadpool(queue.submit, upload.file, upload.filename, info.content_type)
    finally:
        await form.close()


async def _submit(request: Request, queue: Queue, settings: Settings, metrics: Metrics) -> dict[str, Any]:
    try:
        job = await _receive_upload(request, queue, settings)
    except HTTPException as exc:
        metrics.rejected.labels(str(exc.status_code)).inc()
        raise
    metrics.uploads.inc()
    return job


def _find(queue: Queue, job_id: str) -> dict[str, Any]:
    if not is_job_id(job_id):
        raise HTTPException(422, "malformed job id")
    try:
        return queue.get(job_id)
    except JobNotFound:
        raise HTTPException(404, "job not found") from None
    except JobCorrupt:
        # Not the client's mistake: the stored document is damaged.
        raise HTTPException(500, "job document unreadable") from None


def _finished(job: dict[str, Any]) -> None:
    """Raise 409 unless the job is done."""
    if job["status"] == "failed":
        raise HTTPException(409, "job failed")
    if job["status"] != "done":
        raise HTTPException(409, "job not done")


def _job_page(queue: Queue, limit: int, cursor: str | None) -> JobPage:
    try:
        return queue.page(limit, cursor)
    except InvalidCursor:
        raise HTTPException(422, "invalid cursor") from None


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(
    queue: QueueDep,
    settings: SettingsDep,
    submitted: str | None = None,
    cursor: CursorParam = None,
) -> HTMLResponse:
    """The upload form and the most recent jobs (``?submitted=`` confirms a form upload; ``?cursor=`` pages back)."""
    page = _job_page(queue, pages.RECENT_ON_PAGE, cursor)
    return HTMLResponse(pages.index_html(queue, settings, page, submitted=submitted))


@router.post("/upload", include_in_schema=False)
async def upload_form(request: Request, queue: QueueDep, settings: SettingsDep, metrics: MetricsDep) -> Response:
    """The HTML form's target: queue the image and go back to the page."""
    try:
        job = await _submit(request, queue, settings, metrics)
    except HTTPException as exc:
        page = await run_in_threadpool(
            lambda: pages.index_html(queue, settings, queue.page(pages.RECENT_ON_PAGE), refused=str(exc.detail))
        )
        return HTMLResponse(page, status_code=exc.status_code, headers=exc.headers)
    return RedirectResponse(f"/?submitted={job['id']}", status_code=303)


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobView,
    openapi_extra={"requestBody": _UPLOAD_BODY},
    responses={
        202: {"headers": {"Location": {"description": "The job's URL.", "schema": {"type": "string"}}}},
        **error_responses(400, 413, 415, 422, 503),
    },
)
async def create_job(request: Request, queue: QueueDep, settings: SettingsDep, metrics: MetricsDep) -> Response:
    """Queue an uploaded image (multipart field ``file``, nothing else) for grayscale conversion."""
    job = await _submit(request, queue, settings, metrics)
    view = JobView.from_job(job)
    return Response(
        view.model_dump_json(),
        status_code=202,
        media_type="application/json",
        headers={"Location": view.links.self},
    )


@router.get("/jobs", response_model=JobList, responses=error_responses(422, 503))
def list_jobs(
    queue: QueueDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: CursorParam = None,
) -> JobList:
    """Recent jobs, newest first, one page at a time: ``next_cursor`` gives the next (older) page."""
    page = _job_page(queue, limit, cursor)
    return JobList(jobs=[JobView.from_job(job) for job in page.jobs], next_cursor=page.cursor)


@router.get("/jobs/{job_id}", response_model=JobView, responses=error_responses(404, 422, 500, 503))
def get_job(job_id: JobId, queue: QueueDep) -> JobView:
    """One job's status."""
    return JobView.from_job(_find(queue, job_id))


@router.get(
    "/jobs/{job_id}/result",
    response_class=StreamingResponse,
    responses={200: _PNG, **error_responses(404, 409, 422, 500, 503)},
)
def get_result(job_id: JobId, queue: QueueDep, store: StoreDep) -> StreamingResponse:
    """The grayscale PNG once the job is done (409 before that, or when it failed)."""
    job = _find(queue, job_id)
    _finished(job)
    chunks = store.stream(job["result_key"])
    try:
        # The store checks existence on the first chunk: fail before the response starts.
        first = next(chunks, b"")
    except ObjectNotFound:
        raise HTTPException(404, "result not found") from None
    return StreamingResponse(
        itertools.chain([first], chunks),
        media_type="image/png",
        headers={"Content-Disposition": f'inline; filename="{job_id}.png"'},
    )


def _thumbnail(store: ObjectStore, settings: Settings, job: dict[str, Any], kind: str) -> bytes:
    """The stored preview, made from the source image (and stored) on first request."""
    key = f"{THUMBNAILS}{job['id']}/{kind}.jpg"
    try:
        return store.get(key)
    except ObjectNotFound:
        pass
    source_key = job["result_key"] if kind == "result" else job["input_key"]
    try:
        source = store.get(source_key)
    except ObjectNotFound:
        raise HTTPException(404, f"{kind} not found") from None
    try:
        preview = thumbnail_jpeg(source, settings.MAX_IMAGE_PIXELS)
    except ImageError:
        raise HTTPException(409, "no preview: the image cannot be decoded") from None
    if settings.READ_ONLY:
        return preview  # the cutover freeze: nothing new may land in the bucket being copied
    try:
        store.put(key, preview, content_type="image/jpeg", if_absent=True)
    except PreconditionFailed:
        pass  # a concurrent request stored the same preview first
    return preview


@router.get(
    "/jobs/{job_id}/thumbnails/{kind}",
    response_class=Response,
    responses={200: _JPEG, 304: {"description": "The preview the client holds is current."},
               **error_responses(404, 409, 422, 500, 503)},
)
def get_thumbnail(
    job_id: JobId, kind: Literal["input", "result"], request: Request, queue: QueueDep, store: StoreDep,
    settings: SettingsDep,
) -> Response:
    """A small JPEG preview of the job's input (any time) or its result (once done)."""
    job = _find(queue, job_id)
    if kind == "result":
        _finished(job)
    preview = _thumbnail(store, settings, job, kind)
    etag = '"' + hashlib.sha256(preview).hexdigest()[:32] + '"'
    headers = {"Cache-Control": THUMBNAIL_CACHE, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(preview, media_type="image/jpeg", headers=headers)


@router.get("/jobs/{job_id}/page", response_class=HTMLResponse, include_in_schema=False)
def job_page(job_id: str, queue: QueueDep) -> HTMLResponse:
    """One job for people: previews, timeline, the failure reason in words."""
    try:
        job = _find(queue, job_id)
    except HTTPException as exc:
        return HTMLResponse(pages.missing_job_html(job_id, str(exc.detail)), status_code=exc.status_code)
    return HTMLResponse(pages.job_html(JobView.from_job(job)))


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=error_responses(503))
def readyz(store: StoreDep, settings: SettingsDep) -> Health:
    """Readiness: the store answers (503 otherwise)."""
    try:
        store.ping()
    except StorageError:
        raise HTTPException(503, "storage unavailable", headers={"Retry-After": "30"}) from None
    return Health(status="ready", read_only=settings.READ_ONLY)


@router.get("/metrics", include_in_schema=False)
def metrics_endpoint(queue: QueueDep, metrics: MetricsDep) -> Response:
    """Prometheus metrics; queued and processing jobs from one listing page each of ``queue/`` and ``leases/``."""
    try:
        counts = queue.counts()
    except StorageError:
        metrics.storage_up.set(0)
        metrics.jobs.clear()
    else:
        metrics.storage_up.set(1)
        for status, count in counts.items():
            metrics.jobs.labels(status).set(count)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
