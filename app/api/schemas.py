"""Response bodies of the API (they also document it in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Status = Literal["queued", "processing", "done", "failed"]


class JobLinks(BaseModel):
    """Where to poll the job and fetch its result."""

    self: str
    result: str


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
    error: str | None = None
    timings: dict[str, float] = {}
    links: JobLinks

    @classmethod
    def from_job(cls, job: dict[str, Any]) -> JobView:
        """Build the public view of a job document."""
        job_id = job["id"]
        fields = {name: value for name, value in job.items() if name in cls.model_fields and name != "links"}
        return cls(**fields, links=JobLinks(self=f"/jobs/{job_id}", result=f"/jobs/{job_id}/result"))


class JobList(BaseModel):
    """Recent jobs, newest first."""

    jobs: list[JobView]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next (older) page; null at the end.")


class Health(BaseModel):
    """Liveness or readiness."""

    status: str
    read_only: bool = False
