"""The HTML pages for people: upload form with live recent jobs, and one page per job."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from html import escape
from importlib import resources
from urllib.parse import quote
from string import Template

from app.api.schemas import JobView
from app.queue import JobCorrupt, JobNotFound, JobPage, Queue, is_job_id
from app.settings import Settings

#: Jobs shown on the upload page (one bounded listing per page view).
RECENT_ON_PAGE = 20

#: Why an upload was refused, for a person (keys are the API's ``detail`` strings).
_REFUSALS = {
    "not an image": "The file is not an intact image in a supported format (PNG, JPEG, GIF, WebP, BMP or "
    "TIFF): it may be another kind of file, or damaged or cut short.",
    "image too large": "The image has more pixels than this service accepts. Scale it down and try again.",
    "upload too large": "The file is bigger than this service accepts.",
    "missing file field": "No file was chosen.",
    "read-only": "Uploads are paused while the service moves; try again in a few minutes.",
    "storage unavailable": "Storage is not answering right now; try again in a minute.",
}


@cache
def _template(name: str) -> Template:
    return Template(resources.files("app.api").joinpath(f"templates/{name}").read_text(encoding="utf-8"))


def _when(iso: str | None) -> str:
    """An ISO timestamp as ``2026-12-01 20:31:02 UTC`` in a <time> element ("—" when unset)."""
    if not iso:
        return "—"
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return escape(iso)
    return f'<time datetime="{escape(iso)}">{moment.strftime("%Y-%m-%d %H:%M:%S")} UTC</time>'


def _badge(view: JobView) -> str:
    return f'<span class="status {view.status}" data-status-of="{view.id}">{view.status}</span>'


def _failure(view: JobView, lead: str = "Technical reason") -> str:
    return (
        f'<p class="explanation">{escape(view.explanation or "")}</p>'
        f'<p class="technical">{lead}: <code>{escape(view.error or "unknown")}</code></p>'
    )


def _previews(view: JobView) -> str:
    name = escape(view.filename)
    return (
        f'<figure><img src="{view.links.input_thumbnail}" alt="Uploaded image {name}" loading="lazy">'
        "<figcaption>uploaded</figcaption></figure>"
        f'<figure><img src="{view.links.result_thumbnail}" alt="Grayscale result of {name}" loading="lazy">'
        "<figcaption>grayscale</figcaption></figure>"
    )


def result_cell(view: JobView) -> str:
    """The Result column of a job's row (page.js renders the same when the status changes)."""
    if view.status == "done":
        return (
            f'<a class="previews" href="{view.links.result}">{_previews(view)}</a>'
            f'<a href="{view.links.result}">Open result</a>'
        )
    if view.status == "failed":
        return _failure(view)
    words = "being processed…" if view.status == "processing" else "waiting for a worker…"
    retry = f'<p class="technical">Retrying after: <code>{escape(view.error)}</code></p>' if view.error else ""
    return f'<span class="pending">{words}</span>{retry}'


def _row(view: JobView) -> str:
    return (
        f'<tr class="{view.status}" data-job="{view.id}" data-status="{view.status}">'
        f'<td data-label="Job"><a href="{view.links.page}"><code>{view.id[:8]}</code></a></td>'
        f'<td data-label="File">{escape(view.filename)}</td>'
        f'<td data-label="Status">{_badge(view)}</td>'
        f'<td data-label="Created">{_when(view.created_at)}</td>'
        f'<td class="result">{result_cell(view)}</td></tr>'
    )


def _confirmation(queue: Queue, submitted: str | None) -> str:
    """The banner after a form upload (``/?submitted=<id>``); nothing for an unknown or malformed id."""
    if not submitted or not is_job_id(submitted):
        return ""
    try:
        view = JobView.from_job(queue.get(submitted))
    except (JobNotFound, JobCorrupt):
        return ""
    return (
        f'<div class="notice ok" role="status" data-job="{view.id}" data-status="{view.status}">'
        f"<p>Thanks! <strong>{escape(view.filename)}</strong> was received as job "
        f'<a href="{view.links.page}"><code>{view.id[:8]}</code></a>: {_badge(view)}.</p>'
        "<p>This page follows it by itself; no need to reload.</p></div>"
    )


def _refusal(detail: str) -> str:
    words = _REFUSALS.get(detail, "")
    return (
        f'<div class="notice error" role="alert"><p><strong>Upload refused: {escape(detail)}</strong></p>'
        f"<p>{escape(words)}</p></div>"
    )


def index_html(
    queue: Queue, settings: Settings, page: JobPage, *, submitted: str | None = None, refused: str = ""
) -> str:
    """The upload page: form, confirmation or refusal, and one page of jobs (newest first) with live status.

    One bounded listing (the page of jobs) per view: no count of the whole history.
    """
    views = [JobView.from_job(job) for job in page.jobs]
    rows = [_row(view) for view in views]
    if page.cursor:
        older = escape(quote(page.cursor, safe=""))
        rows.append(f'<tr class="older"><td colspan="5"><a href="/?cursor={older}">Older jobs</a></td></tr>')
    paused = '<div class="notice paused"><p>Uploads are paused (read-only) while the service moves.</p></div>'
    return _template("index.html").substitute(
        message=_refusal(refused) if refused else _confirmation(queue, submitted),
        read_only=paused if settings.READ_ONLY else "",
        disabled="disabled" if settings.READ_ONLY else "",
        max_mib=f"{settings.MAX_UPLOAD_BYTES / 1024 / 1024:.0f}",
        rows="\n".join(rows) or '<tr><td colspan="5">No jobs yet.</td></tr>',
    )


def _timeline(view: JobView) -> str:
    timings = view.timings
    steps = [
        ("Queued", _when(view.created_at), ""),
        ("Started", _when(view.started_at), f"after waiting {timings['queued_seconds']:.1f} s"
         if "queued_seconds" in timings else ""),
        ("Failed" if view.status == "failed" else "Finished", _when(view.finished_at), ""),
    ]
    items = [f"<li><strong>{label}</strong>: {moment} {escape(note)}</li>" for label, moment, note in steps]
    return '<ol class="timeline">' + "".join(items) + "</ol>"


def job_html(view: JobView) -> str:
    """The page of one job: status, previews, timeline, facts and the failure reason in words."""
    parts = [
        f"<h2>{escape(view.filename) or 'upload'}</h2>",
        f"<p>Job <code>{view.id}</code> is {_badge(view)}.</p>",
    ]
    if view.status == "failed":
        parts.append(f'<div class="notice error" role="alert">{_failure(view)}</div>')
    elif view.status != "done":
        parts.append('<p class="pending">This page updates by itself when the job moves on.</p>')
        if view.error:
            parts.append(f'<div class="notice paused">{_failure(view, "Retrying after")}</div>')
    if view.status == "done":
        # Previews only for finished jobs: the worker has shown the input decodes, and the API
        # decodes nothing for jobs still waiting.
        parts.append(f'<div class="previews">{_previews(view)}</div>')
    parts.append("<h3>Timeline</h3>" + _timeline(view))
    size = f"{view.size:,} bytes" if view.size is not None else "—"
    parts.append(
        '<dl class="facts">'
        f"<dt>Attempts</dt><dd>{view.attempts}</dd>"
        f"<dt>Type</dt><dd>{escape(view.content_type or '—')}</dd>"
        f"<dt>Size</dt><dd>{size}</dd></dl>"
    )
    links = [f'<a href="{view.links.self}">JSON</a>', '<a href="/">All jobs</a>']
    if view.status == "done":
        links.insert(0, f'<a href="{view.links.result}">Open the grayscale result</a>')
    parts.append("<p>" + " · ".join(links) + "</p>")
    return _template("job.html").substitute(
        title=escape(view.filename) or view.id, job_id=view.id, status=view.status, body="\n".join(parts)
    )


def missing_job_html(job_id: str, detail: str) -> str:
    """The page for a job id that is malformed, unknown or unreadable."""
    words = {
        "malformed job id": "This is not a job address: a job id has 32 letters and digits.",
        "job not found": "There is no job with this id (it may have been removed).",
    }.get(detail, "This job's record cannot be read right now.")
    body = (
        f'<div class="notice error" role="alert"><p><strong>{escape(detail)}</strong></p>'
        f"<p>{escape(words)}</p></div><p><a href=\"/\">All jobs</a></p>"
    )
    return _template("job.html").substitute(title=escape(detail), job_id="", status="gone", body=body)
