"""One error body for every 4xx/5xx answer, the handlers that produce it and its OpenAPI entries."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from app.api.schemas import ErrorBody, FieldProblem
from app.storage.base import StorageError

log = logging.getLogger(__name__)

#: Seconds a client should wait before retrying after a storage error.
STORAGE_RETRY_AFTER = "30"

_DESCRIPTIONS = {
    400: "Malformed request (unparseable multipart body, invalid Content-Length).",
    404: "No such job, or its result is gone.",
    409: "The job is not in a state that allows this (not done yet, or failed).",
    413: "The upload is over MAX_UPLOAD_BYTES or the image over MAX_IMAGE_PIXELS.",
    415: "Not multipart/form-data, or the file is not an intact image of a supported format.",
    422: "A parameter or form field is invalid (malformed job id, limit out of range, no `file` field).",
    500: "The job's stored document is unreadable.",
    503: "Storage is unavailable, or the service is read-only for a cutover (see Retry-After).",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for ``codes``, all with the ErrorBody schema."""
    entries: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"model": ErrorBody, "description": _DESCRIPTIONS[code]}
        if code == 503:
            entry["headers"] = _RETRY_AFTER
        entries[code] = entry
    return entries


def _body(detail: str, status: int, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(ErrorBody(detail=detail, **extra).model_dump(), status_code=status, headers=headers)


def _leaves(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        # FastAPI >= 0.16x wraps an included router; its own routes carry the paths.
        included = getattr(route, "original_router", None)
        yield from _leaves(included.routes) if included is not None else (route,)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette's own 405 names only the first route's)."""
    methods: set[str] = set()
    for route in _leaves(request.app.router.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= route.methods
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return _body(detail.lower() if exc.status_code in (404, 405) else detail, exc.status_code, headers or None)


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [FieldProblem(field=_field(error["loc"]), message=error["msg"]) for error in exc.errors()]
    if any(problem.field == "path.job_id" for problem in problems):
        detail = "malformed job id"
    else:
        detail = "invalid " + ", ".join(problem.field.split(".")[-1] for problem in problems)
    return _body(detail, 422, errors=problems)


async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: storage error: %s", request.method, request.url.path, exc)
    return _body("storage unavailable", 503, {"Retry-After": STORAGE_RETRY_AFTER})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: unexpected error", request.method, request.url.path, exc_info=exc)
    return _body("internal error", 500)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error answer of ``app`` an ErrorBody."""
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StorageError, _storage_unavailable)
    app.add_exception_handler(Exception, _unexpected)
