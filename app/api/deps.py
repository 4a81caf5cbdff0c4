"""Dependencies the routes receive through ``Annotated`` aliases (tests override the getters)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.metrics import Metrics
from app.queue import Queue
from app.settings import Settings
from app.storage.base import ObjectStore


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


def get_store(request: Request) -> ObjectStore:
    """The app's store (built at start-up)."""
    return request.app.state.store


def get_metrics(request: Request) -> Metrics:
    """The app's Prometheus metrics."""
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def get_queue(store: StoreDep, settings: SettingsDep) -> Queue:
    """The job queue on the app's store."""
    return Queue.from_settings(store, settings)


QueueDep = Annotated[Queue, Depends(get_queue)]
