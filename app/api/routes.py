"""The HTTP routes: upload page, jobs, results, health and metrics."""

from __future__ import annotations

import html
import itertools
from functools import cache
from importlib import resources
from string import Template
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from app.api.metrics import Metrics
from app.api.deps import MetricsDep, QueueDep, SettingsDep, StoreDep
from app.api.schemas import Health, JobList, JobView
from app.imaging import ImageError, ImageTooLarge, verify_image
from app.queue import InvalidCursor, JobCorrupt, JobNotFound, JobPage, Queue, is_job_id
from app.settings import Settings
from app.storage.base import ObjectNotFound, StorageError

router = APIRouter()

#: Seconds a client should wait before retrying a write during the cutover freeze.
READ_ONLY_RETRY_AFTER = "120"
#: Room for multipart boundaries and part headers on top of MAX_UPLOAD_BYTES.
MULTIPART_OVERHEAD = 64 * 1024

_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        }
    },
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

    return await MultiPartParser(request.headers, limited(), max_files=1, max_fields=10).parse()


async def _receive_upload(request: Request, queue: Queue, settings: Settings) -> dict[str, Any]:
    """Check and enqueue one uploaded image; every client mistake becomes a 4xx."""
    if settings.READ_ONLY:
        raise HTTPException(503, "read-only", headers={"Retry-After": READ_ONLY_RETRY_AFTER})
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
        form = await _read_form(request, max_body)
    except _BodyTooLarge:
        raise HTTPException(413, "upload too large") from None
    except MultiPartException:
        raise HTTPException(400, "malformed multipart body") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "missing file field")
        if upload.size is not None and upload.size > settings.MAX_UPLOAD_BYTES:
            raise HTTPException(413, "upload too large")
        try:
            info = await run_in_threadpool(verify_image, upload.file, settings.MAX_IMAGE_PIXELS)
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


@cache
def _page() -> Template:
    return Template(resources.files("app.api").joinpath("templates/index.html").read_text(encoding="utf-8"))


def _index_html(queue: Queue, settings: Settings, message: str = "", cursor: str | None = None) -> str:
    rows = []
    page = _job_page(queue, 20, cursor)
    for job in page.jobs:
        view = JobView.from_job(job)
        result = f'<a href="{view.links.result}">result</a>' if view.status == "done" else html.escape(view.error or "")
        rows.append(
            f'<tr class="{view.status}"><td><a href="{view.links.self}"><code>{view.id[:8]}</code></a></td>'
            f"<td>{html.escape(view.filename)}</td><td>{view.status}</td>"
            f"<td>{html.escape(view.created_at)}</td><td>{result}</td></tr>"
        )
    if page.cursor:
        rows.append(f'<tr><td colspan="5"><a href="/?cursor={page.cursor}">Older jobs</a></td></tr>')
    counts = queue.counts()
    frozen = '<p class="message">Uploads are paused (read-only) while the service moves.</p>'
    return _page().substitute(
        message=f'<p class="message">{html.escape(message)}</p>' if message else "",
        read_only=frozen if settings.READ_ONLY else "",
        disabled="disabled" if settings.READ_ONLY else "",
        max_mib=f"{settings.MAX_UPLOAD_BYTES / 1024 / 1024:.0f}",
        counts=", ".join(f"{count} {status}" for status, count in counts.items()),
        rows="\n".join(rows) or '<tr><td colspan="5">No jobs yet.</td></tr>',
    )


def _job_page(queue: Queue, limit: int, cursor: str | None) -> JobPage:
    try:
        return queue.page(limit, cursor)
    except InvalidCursor:
        raise HTTPException(422, "invalid cursor") from None


@router.get("/", response_class=HTMLResponse, summary="Upload page and recent jobs")
def index(queue: QueueDep, settings: SettingsDep, cursor: str | None = None) -> HTMLResponse:
    """The upload form and the most recent jobs (older ones page by page with ``cursor``)."""
    return HTMLResponse(_index_html(queue, settings, cursor=cursor))


@router.post("/upload", include_in_schema=False)
async def upload_form(request: Request, queue: QueueDep, settings: SettingsDep, metrics: MetricsDep) -> Response:
    """The HTML form's target: queue the image and go back to the page."""
    try:
        job = await _submit(request, queue, settings, metrics)
    except HTTPException as exc:
        page = await run_in_threadpool(_index_html, queue, settings, f"Upload refused: {exc.detail}")
        return HTMLResponse(page, status_code=exc.status_code, headers=exc.headers)
    return RedirectResponse(f"/?submitted={job['id']}", status_code=303)


@router.post("/jobs", status_code=202, response_model=JobView, openapi_extra={"requestBody": _UPLOAD_BODY})
async def create_job(request: Request, queue: QueueDep, settings: SettingsDep, metrics: MetricsDep) -> Response:
    """Queue an uploaded image (multipart field ``file``) for grayscale conversion."""
    job = await _submit(request, queue, settings, metrics)
    view = JobView.from_job(job)
    return Response(
        view.model_dump_json(),
        status_code=202,
        media_type="application/json",
        headers={"Location": view.links.self},
    )


@router.get("/jobs", response_model=JobList)
def list_jobs(
    queue: QueueDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
) -> JobList:
    """Recent jobs, newest first, one page at a time: ``next_cursor`` gives the next (older) page."""
    page = _job_page(queue, limit, cursor)
    return JobList(jobs=[JobView.from_job(job) for job in page.jobs], next_cursor=page.cursor)


@router.get("/jobs/{job_id}", response_model=JobView)
def get_job(job_id: str, queue: QueueDep) -> JobView:
    """One job's status."""
    return JobView.from_job(_find(queue, job_id))


@router.get("/jobs/{job_id}/result", response_class=StreamingResponse, responses={200: {"content": {"image/png": {}}}})
def get_result(job_id: str, queue: QueueDep, store: StoreDep) -> StreamingResponse:
    """The grayscale PNG once the job is done (409 before that)."""
    job = _find(queue, job_id)
    if job["status"] == "failed":
        raise HTTPException(409, "job failed")
    if job["status"] != "done":
        raise HTTPException(409, "job not done")
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


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
def readyz(store: StoreDep, settings: SettingsDep) -> Health:
    """Readiness: the store answers (503 otherwise)."""
    try:
        store.ping()
    except StorageError:
        raise HTTPException(503, "storage unavailable") from None
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
