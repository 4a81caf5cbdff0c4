"""Response bodies of the API (they also document it in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.api.explain import explain_error

Status = Literal["queued", "processing", "done", "failed"]


class FieldProblem(BaseModel):
    """One invalid part of a request: where it is and what is wrong with it."""

    field: str = Field(description="Where the problem is, e.g. `query.limit` or `path.job_id`.")
    message: str


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx answer."""

    detail: str = Field(description="A short, stable reason, e.g. `job not found`.")
    errors: list[FieldProblem] = Field(default=[], description="Each invalid request part (422 only).")


class JobLinks(BaseModel):
    """Where to poll the job, see it as a page, fetch its result and its previews."""

    self: str
    result: str
    page: str
    input_thumbnail: str
    result_thumbnail: str


class JobView(BaseModel):
    """A job as clients see it (storage keys stay internal)."""

    id: str
    status: Status
    filename: str
    content_type: str | None = None
    size: int | None = None
    created_at: str
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    error: str | None = Field(None, description="The technical reason of the last failure.")
    explanation: str | None = Field(None, description="What `error` means, in words a person understands.")
    timings: dict[str, float] = {}
    links: JobLinks

    @classmethod
    def from_job(cls, job: dict[str, Any]) -> JobView:
        """Build the public view of a job document."""
        job_id = job["id"]
        fields = {name: value for name, value in job.items() if name in cls.model_fields and name != "links"}
        fields["explanation"] = explain_error(job.get("error"))
        base = f"/jobs/{job_id}"
        links = JobLinks(
            self=base,
            result=f"{base}/result",
            page=f"{base}/page",
            input_thumbnail=f"{base}/thumbnails/input",
            result_thumbnail=f"{base}/thumbnails/result",
        )
        return cls(**fields, links=links)


class JobList(BaseModel):
    """Recent jobs, newest first."""

    jobs: list[JobView]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next (older) page; null at the end.")


class Health(BaseModel):
    """Liveness or readiness."""

    status: str
    read_only: bool = False
