"""Run the API under uvicorn."""

from __future__ import annotations

import logging

from app.settings import Settings, load_settings

log = logging.getLogger(__name__)


def serve(host: str, port: int, settings: Settings | None = None) -> None:
    """Serve the API on ``host:port`` until SIGTERM/SIGINT.

    Configuration errors (``ConfigError``, ``StorageConfigError``) are raised before the port is bound.
    """
    import uvicorn

    from app.api.main import create_app
    from app.imaging import configure
    from app.storage.base import StorageConfigError, StorageError

    settings = settings if settings is not None else load_settings()
    configure(settings.MAX_IMAGE_PIXELS)
    store = settings.build_store()
    try:
        store.ping()
    except StorageConfigError:
        store.close()
        raise
    except StorageError as exc:
        # Transient: serve anyway; /readyz reports 503 until the store answers.
        log.warning("store %s not reachable yet: %s", store.url, exc)
    app = create_app(settings, store)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=settings.LOG_LEVEL.lower(),
        server_header=False,
        # The spot notice is ~30 s: in-flight requests get the same grace as a worker's job.
        timeout_graceful_shutdown=int(settings.WORKER_GRACE_SECONDS) or None,
    )
