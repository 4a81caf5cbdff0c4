"""The HTTP API: upload page, jobs, results, health and metrics."""

from app.api.main import create_app
from app.api.server import serve

__all__ = ["create_app", "serve"]
