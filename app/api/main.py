"""Build the FastAPI application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from app import __version__
from app.api.errors import install_error_handlers
from app.api.metrics import LatencyMiddleware, Metrics
from app.api.routes import router
from app.settings import Settings, load_settings
from app.storage.base import ObjectStore

log = logging.getLogger(__name__)

#: The page's own CSS and JS (no CDN: VMs may have no internet).
STATIC_URL = "/static"
#: Swagger UI's assets, as shipped inside the fastapi-offline package.
DOCS_STATIC_URL = "/static/docs"


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

    app = FastAPIOffline(
        title="spotshift",
        version=__version__,
        summary="Upload an image, get it back in grayscale; jobs run on spot VMs.",
        lifespan=lifespan,
        static_url=DOCS_STATIC_URL,
        # ReDoc's bundle fetches its logo from a CDN; Swagger UI alone works fully offline.
        redoc_url=None,
        favicon_url=f"{STATIC_URL}/favicon.svg",
    )
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = Metrics()
    static = resources.files("app.api").joinpath("static")
    app.mount(STATIC_URL, StaticFiles(directory=str(static)), name="static")
    app.include_router(router)
    app.add_middleware(LatencyMiddleware, metrics=app.state.metrics)
    install_error_handlers(app)
    return app
