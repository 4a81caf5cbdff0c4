"""Build the FastAPI application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app import __version__
from app.api.metrics import LatencyMiddleware, Metrics
from app.api.routes import router
from app.settings import Settings, load_settings
from app.storage.base import ObjectStore, StorageError

log = logging.getLogger(__name__)


async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: storage error: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "storage unavailable"}, status_code=503, headers={"Retry-After": "30"})


def create_app(settings: Settings | None = None, store: ObjectStore | None = None) -> FastAPI:
    """The API app on ``store`` (default: built from ``settings``, themselves read from the environment)."""
    settings = settings if settings is not None else load_settings()
    store = store if store is not None else settings.build_store()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            app.state.store.close()

    app = FastAPI(
        title="spotshift",
        version=__version__,
        summary="Upload an image, get it back in grayscale; jobs run on spot VMs.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = Metrics()
    app.include_router(router)
    app.add_middleware(LatencyMiddleware, metrics=app.state.metrics)
    app.add_exception_handler(StorageError, _storage_unavailable)
    return app
